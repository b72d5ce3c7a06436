"""The safe writers: atomic placement, and definition rewrites that keep the user's file as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunehub.errors import ConcurrentEditError, DefinitionError
from tunehub.safeio import DefinitionDocument, atomic_write_bytes, atomic_writer, is_temp_name, update_definition

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=12) | st.floats(
    allow_nan=False, allow_infinity=False
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
definitions = st.dictionaries(st.text(max_size=10), json_values, max_size=6).map(
    lambda d: {**d, "model": {"name": "Ünïcode ✓ 模型", "architecture": "t2v", "URLs": ["a_bf16.safetensors"]}}
)


@settings(max_examples=60, deadline=None)
@given(data=definitions, indent=st.sampled_from(["\t", 2, 4, None]))
def test_rewrite_reads_back_equal_and_keeps_key_order(tmp_path_factory: pytest.TempPathFactory, data: dict, indent: object) -> None:
    path = tmp_path_factory.mktemp("def") / "ft.json"
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=False), encoding="utf-8")
    doc = DefinitionDocument.read(path)
    new = json.loads(doc.text)
    new["model"]["URLs"].append("ckpts/a_quanto_bf16_int8.safetensors")
    doc.write(new)
    text = path.read_text(encoding="utf-8")
    again = json.loads(text)
    assert again == new
    assert list(again) == list(data)
    assert list(again["model"]) == list(data["model"])
    assert "模型" in text  # non-ASCII kept as is, not \u-escaped
    if indent == "\t":
        assert "\n\t\"" in text
    elif indent == 2:
        assert '\n  "' in text and '\n    "model"' not in text


def test_concurrent_edit_is_refused_and_update_definition_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "ft.json"
    path.write_text(json.dumps({"model": {"name": "a", "URLs": []}}, indent=4))
    doc = DefinitionDocument.read(path)
    # the user edits the file after we read it
    path.write_text(json.dumps({"model": {"name": "user edit", "URLs": []}}, indent=4))
    with pytest.raises(ConcurrentEditError):
        doc.write({"model": {"name": "a", "URLs": ["x"]}})
    assert json.loads(path.read_text())["model"]["name"] == "user edit"

    def add_url(data: dict) -> None:
        data["model"]["URLs"].append("x")

    update_definition(path, add_url)
    assert json.loads(path.read_text())["model"] == {"name": "user edit", "URLs": ["x"]}


def test_atomic_writer_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_writer(target) as handle:
            handle.write(b"new partial")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_killed_writer_never_tears_the_file(tmp_path: Path) -> None:
    target = tmp_path / "big.bin"
    atomic_write_bytes(target, b"A" * 1000)
    code = (
        "import os, sys\n"
        "from tunehub.safeio import atomic_writer\n"
        f"with atomic_writer({str(target)!r}) as f:\n"
        "    f.write(b'B' * 500); f.flush(); print('ready', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.kill()
    proc.wait()
    assert target.read_bytes() == b"A" * 1000
    leftovers = [name for name in os.listdir(tmp_path) if name != "big.bin"]
    assert leftovers and all(is_temp_name(name) for name in leftovers)  # recognisable, so cleanable


def test_a_definition_that_is_not_utf8_is_a_definition_error_naming_the_file_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "ft.json"
    raw = '{"model": {"name": "Caf\u00e9", "URLs": []}}'.encode("latin-1")  # saved by an editor in Latin-1
    path.write_bytes(raw)
    with pytest.raises(DefinitionError) as caught:
        DefinitionDocument.read(path)
    message = str(caught.value)
    assert str(path) in message and "UTF-8" in message and f"byte {raw.index(0xE9)}" in message
    with pytest.raises(DefinitionError):
        update_definition(path, lambda data: None)
    assert path.read_bytes() == raw
