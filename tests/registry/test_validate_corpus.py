"""A corpus of malformed definitions: each gives exit 1 from `tunehub validate`, naming file and key."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.homes import Home

HUB = "https://huggingface.co/ns/repo/resolve/main/"


def d(model: object = None, **settings: object) -> str:
    data: dict[str, object] = dict(settings)
    if model is not None:
        data["model"] = model
    return json.dumps(data, indent=2)


OK = {"name": "Ft", "architecture": "t2v", "URLs": [HUB + "ft_bf16.safetensors"]}

# (case id, file content, key expected in the message line)
CORPUS: list[tuple[str, str | bytes, str]] = [
    ("syntax", '{ "model": { "name": "x" ', "(json)"),
    ("trailing_comma", '{"model": {"name": "a", "architecture": "t2v",}}', "(json)"),
    ("comment", '{\n// a comment\n"model": {}}', "(json)"),
    ("empty_file", "", "(json)"),
    ("not_utf8", b'{"model": {"name": "\xff\xfe"}}', "(file)"),
    ("top_level_list", "[1, 2]", "(top level)"),
    ("no_model", d(prompt="hi"), "model"),
    ("model_string", d("t2v"), "model"),
    ("no_name", d({"architecture": "t2v", "URLs": OK["URLs"]}), "model.name"),
    ("no_architecture", d({"name": "x", "URLs": OK["URLs"]}), "model.architecture"),
    ("name_number", d({**OK, "name": 123}), "model.name"),
    ("name_empty", d({**OK, "name": "  "}), "model.name"),
    ("architecture_number", d({**OK, "architecture": 5}), "model.architecture"),
    ("architecture_empty", d({**OK, "architecture": ""}), "model.architecture"),
    ("urls_number", d({**OK, "URLs": 7}), "model.URLs"),
    ("urls_entry_number", d({**OK, "URLs": [HUB + "a_bf16.safetensors", 3]}), "model.URLs[1]"),
    ("urls_entry_ftp", d({**OK, "URLs": ["ftp://host/a_bf16.safetensors"]}), "model.URLs[0]"),
    ("urls_entry_empty", d({**OK, "URLs": [""]}), "model.URLs[0]"),
    ("urls_reference_missing", d({**OK, "URLs": "no_such_definition"}), "model.URLs"),
    ("urls_reference_self", d({**OK, "URLs": "urls_reference_self"}), "model.URLs"),
    ("urls_empty_string", d({**OK, "URLs": ""}), "model.URLs"),
    ("urls2_object", d({**OK, "URLs2": {"a": 1}}), "model.URLs2"),
    ("preload_s3", d({**OK, "preload_URLs": ["s3://bucket/map.json"]}), "model.preload_URLs[0]"),
    ("modules_not_list", d({**OK, "modules": 3}), "model.modules"),
    ("modules_reference_missing", d({**OK, "modules": "vace"}), "model.modules"),
    ("modules_object_without_urls2", d({**OK, "modules": [{"URLs": [HUB + "m_bf16.safetensors"]}]}),
     "model.modules[0].URLs2"),
    ("loras_number", d({**OK, "loras": 5}), "model.loras"),
    ("loras_reference_missing", d({**OK, "loras": "nobody"}), "model.loras"),
    ("modules_item_empty", d({**OK, "modules": [[]]}), "model.modules[0]"),
    ("modules_item_missing_ref", d({**OK, "modules": ["no_module_here"]}), "model.modules[0]"),
    ("modules_ref_with_no_module", d({**OK, "modules": ["t2v"]}), "model.modules[0]"),
    ("auto_quantize_string", d({**OK, "auto_quantize": "yes"}), "model.auto_quantize"),
    ("visible_string", d({**OK, "visible": "false"}), "model.visible"),
    ("resolution_bad", d(OK, resolution="832*480"), "resolution"),
    ("video_length_string", d(OK, video_length="81"), "video_length"),
    ("guidance_bool", d(OK, guidance_scale=True), "guidance_scale"),
    ("seed_float", d(OK, seed=1.5), "seed"),
]


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 25
    assert len({case for case, _, _ in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize(("case", "content", "key"), CORPUS, ids=[c[0] for c in CORPUS])
def test_malformed_definition_is_reported(home: Home, case: str, content: str | bytes, key: str) -> None:
    path = home.finetunes / f"{case}.json"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    before = path.read_bytes()
    result = home.run("validate", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stdout.splitlines() if line.startswith(f"{path}: {key}: ")]
    assert lines, f"no line '{path}: {key}: ...' in:\n{result.stdout}"
    assert path.read_bytes() == before  # validating never touches the file


def test_every_malformed_file_at_once_and_others_still_load(home: Home) -> None:
    for case, content, _ in CORPUS:
        (home.finetunes / f"{case}.json").write_bytes(content.encode() if isinstance(content, str) else content)
    home.write_definition("good", OK)
    result = home.run("validate")
    assert result.returncode == 1
    reported = {line.split(":", 1)[0] for line in result.stdout.splitlines()}
    assert reported == {str(home.finetunes / f"{case}.json") for case, _, _ in CORPUS}
    listing = json.loads(home.run("list", "--json", check=True).stdout)
    by_id = {row["id"]: row for row in listing}
    assert by_id["good"]["valid"] is True
    assert by_id["syntax"]["valid"] is False and by_id["syntax"]["errors"]


def test_builtins_validate_clean(home: Home) -> None:
    from tunehub.registry import builtin_definitions_dir

    result = home.run("validate", str(builtin_definitions_dir()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
