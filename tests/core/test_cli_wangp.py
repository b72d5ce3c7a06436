"""The registry commands on a WanGP install, run as a user runs them (real subprocesses)."""

from __future__ import annotations

import json

from tests.fixtures.homes import Home
from tests.fixtures.wangp_tree import DEFAULTS, FINETUNES, write_tree


def _wangp_home(home: Home) -> Home:
    write_tree(home.root)
    return home


def test_list_ends_with_a_summary_and_shows_files_per_row(home: Home) -> None:
    _wangp_home(home)
    (home.ckpts / "ZImageTurbo_quanto_bf16_int8.safetensors").write_bytes(b"x")
    result = home.run("list", check=True, env=home.env(TUNEHUB_GPU_CAPABILITY="8.9"))
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == ["ID", "ARCHITECTURE", "FAMILY", "STATE", "FILES"]
    visible = len([i for i in {**DEFAULTS, **FINETUNES} if DEFAULTS.get(i, {}).get("visible", True)]) + 1  # + t2v_fusionix
    assert lines[-1].startswith(f"{visible} definitions, ") and "0 with problems" in lines[-1]
    assert "2 downloaded" in lines[-1]  # z_image, and t2v_myft whose int8 file the tree has
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert "INVALID" not in result.stdout
    assert rows["z_image"].split()[4] == "present" and rows["ltx2_22B"].split()[4] == "missing"
    assert rows["ltx2_22B"].split()[2] == "ltx"


def test_list_json_carries_the_family(home: Home) -> None:
    _wangp_home(home)
    rows = {row["id"]: row for row in json.loads(home.run("list", "--json", check=True).stdout)}
    assert rows["flux2_dev"]["family"] == "flux" and rows["future_model"]["family"] == "unknown"
    assert all(row["valid"] for row in rows.values())


def test_validate_groups_a_repeated_message_and_verbose_lists_all(home: Home) -> None:
    for index in range(6):
        home.write_definition(f"broken_{index}", {"name": "b", "architecture": "t2v", "URLs": "nowhere"})
    home.write_definition("lonely", {"name": "b", "architecture": "t2v", "URLs": [5]})
    result = home.run("validate")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    grouped = [line for line in lines if "6 files" in line]
    assert len(grouped) == 1 and "--verbose" in grouped[0] and "broken_0.json" in grouped[0]
    assert any(line.startswith(str(home.finetunes / "lonely.json")) for line in lines)
    assert len(lines) == 2
    verbose = home.run("validate", "--verbose").stdout.splitlines()
    assert len(verbose) == 7


def test_show_lists_files_even_with_problems(home: Home) -> None:
    home.write_definition("half", {"name": "h", "architecture": "t2v", "URLs": ["a_bf16.safetensors"],
                                   "URLs2": "missing_ref", "loras": ["style.safetensors"]})
    out = home.run("show", "half", check=True).stdout
    assert "problems:" in out and "a_bf16.safetensors" in out and "style.safetensors" in out


def test_resolve_says_what_each_file_is_and_lists_loras(home: Home) -> None:
    _wangp_home(home)
    out = home.run("resolve", "t2v_2_2_lightning", "--quantization", "bf16", check=True,
                   env=home.env(TUNEHUB_GPU_CAPABILITY="7.5")).stdout
    assert "dtype fp16" in out and "capability < 8" in out
    assert "(16-bit bf16)" in out and "lora: lightning_high.safetensors  (x1;0)" in out
    data = json.loads(home.run("resolve", "t2v_2_2_lightning", "--json", check=True).stdout)
    assert [(lora["filename"], lora["multiplier"]) for lora in data["loras"]] == [
        ("lightning_high.safetensors", "1;0"), ("lightning_low.safetensors", "0;1")]


def test_generate_on_an_architecture_without_a_pipeline_is_one_line(home: Home) -> None:
    _wangp_home(home)
    result = home.run("generate", "ltx2_22B", "--prompt", "x")
    assert result.returncode == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "ltx2_22B" in error[0] and "family ltx" in error[0] and "pull" in error[0]


def test_config_warns_about_a_missing_definition_dir(home: Home) -> None:
    home.write_config('definition_dirs = ["gone"]\n')
    for command in ("config", "list", "validate"):
        result = home.run(command)
        assert "warning:" in result.stderr and "gone does not exist" in result.stderr, command
