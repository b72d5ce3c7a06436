"""The registry commands, run as a user runs them: real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.fixtures.homes import Home

HUB = "https://huggingface.co/ns/repo/resolve/main/"


def test_list_json_shape_and_filters(home: Home) -> None:
    home.write_definition("my_ft", {"name": "My Finetune", "architecture": "i2v", "URLs": [HUB + "m_bf16.safetensors"]})
    rows = json.loads(home.run("list", "--json", check=True).stdout)
    assert isinstance(rows, list)
    for row in rows:
        assert {"id", "name", "architecture", "valid", "errors"} <= set(row)
    only_i2v = json.loads(home.run("list", "--json", "--arch", "i2v", check=True).stdout)
    assert {row["id"] for row in only_i2v} == {"i2v", "my_ft"}
    found = json.loads(home.run("list", "--json", "--search", "finetune", check=True).stdout)
    assert [row["id"] for row in found] == ["my_ft"]
    assert "my_ft" in home.run("list", check=True).stdout


def test_resolve_json_is_exactly_the_documented_object(home: Home) -> None:
    (home.ckpts / "wan2.1_text2video_14B_quanto_mfp16_int8.safetensors").write_bytes(b"0")
    out = json.loads(home.run("resolve", "vace_14B", "--quantization", "int8", "--dtype", "fp16", "--json", check=True).stdout)
    assert set(out) == {"id", "architecture", "quantization", "dtype", "transformer", "transformer2", "modules", "preload",
                        "loras"}
    assert (out["id"], out["architecture"], out["quantization"], out["dtype"]) == ("vace_14B", "vace_14B", "int8", "fp16")
    transformer = out["transformer"]
    assert set(transformer) == {"source", "filename", "path", "present"}
    assert transformer["present"] is True
    assert transformer["path"] == str(home.ckpts / "wan2.1_text2video_14B_quanto_mfp16_int8.safetensors")
    assert out["transformer2"] is None
    assert [m["filename"] for m in out["modules"]] == ["wan2.1_Vace_14B_module_quanto_mfp16_int8.safetensors"]
    assert out["modules"][0]["present"] is False


def test_resolve_uses_configured_preferences(home: Home) -> None:
    home.write_config('quantization = "bf16"\ndtype = "fp16"\n')
    out = json.loads(home.run("resolve", "t2v", "--json", check=True).stdout)
    assert (out["quantization"], out["dtype"]) == ("bf16", "fp16")
    assert out["transformer"]["filename"] == "wan2.1_text2video_14B_mbf16.safetensors"
    text = home.run("resolve", "t2v", check=True).stdout
    assert "why:" in text and "16-bit wanted" in text


def test_exit_codes(home: Home) -> None:
    assert home.run("resolve", "no_such").returncode == 1
    assert "no definition 'no_such'" in home.run("resolve", "no_such").stderr
    assert home.run("resolve").returncode == 2  # usage error
    assert home.run("list", "--bogus").returncode == 2
    assert home.run("show", "t2v").returncode == 0
    for command in ("list", "show", "resolve", "validate", "config"):
        assert home.run(command, "--help").returncode == 0


def test_config_reports_origins_warns_on_unknown_and_rejects_wrong_types(home: Home) -> None:
    home.write_config('quantization = "bf16"\nspeling_mistake = 1\n')
    result = home.run("config", "--json", check=True)
    out = json.loads(result.stdout)
    assert out["values"]["quantization"] == "bf16"
    assert out["origins"]["quantization"].endswith("tunehub.toml")
    assert out["origins"]["dtype"] == "default"
    assert "speling_mistake" in result.stderr
    home.write_config('weights_dirs = "ckpts"\n')
    bad = home.run("config")
    assert bad.returncode == 1
    assert "weights_dirs" in bad.stderr and "list" in bad.stderr and "tunehub.toml" in bad.stderr
    home.write_config('quantization = "int4"\n')
    assert "int8, fp8, bf16" in home.run("list").stderr


def test_endpoint_env_wins(home: Home) -> None:
    home.write_config('endpoint = "http://lan:1"\n')
    out = json.loads(home.run("config", "--json", env=home.env(HF_ENDPOINT="http://other:2"), check=True).stdout)
    assert out["values"]["endpoint"] == "http://other:2" and out["origins"]["endpoint"] == "HF_ENDPOINT"


def test_light_commands_import_no_heavy_library(home: Home) -> None:
    code = (
        "import sys\n"
        "from tunehub.cli.main import main\n"
        f"home = {str(home.root)!r}\n"
        "assert main(['--home', home, 'list', '--json']) == 0\n"
        "assert main(['--home', home, 'resolve', 't2v', '--json']) == 0\n"
        "assert main(['--home', home, 'validate']) == 0\n"
        "heavy = [m for m in ('torch', 'diffusers', 'textual', 'transformers', 'starlette', 'uvicorn', 'optimum') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=home.env())
    assert result.returncode == 0, result.stderr


def test_python_dash_m_is_the_same_command(home: Home) -> None:
    result = subprocess.run([sys.executable, "-m", "tunehub", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("tunehub ")
