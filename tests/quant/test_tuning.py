"""The pipeline's tuning knobs (TUNEHUB_QUANT_*): every combination writes the same bytes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.quant.tiny import TinyWan, save_model
from tunehub.cli.main import main
from tunehub.errors import QuantizationError
from tunehub.quant.stream import _Tuning, quantize_file
from tunehub.safeio import TEMP_MARKER

KNOBS = [
    {},
    # The CUDA defaults' pipeline shape, run on the CPU: read-ahead threads started before
    # torch, several readers, sync_file_range flushes every MiB, page cache dropped.
    {"READERS": "3", "PREFETCH_MB": "1", "PREFETCH_THREADS": "3", "FLUSH": "range", "FLUSH_MB": "1", "DROP": "1"},
    {"READERS": "2", "PREFETCH_MB": "64", "PREFETCH": "willneed", "FLUSH": "off", "WORKERS": "1"},
    {"READERS": "4", "WORKERS": "3", "BUDGET_MB": "1", "FLUSH": "fdatasync", "FLUSH_MB": "1"},
]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    torch.manual_seed(50)
    return save_model(TinyWan(layers=3, image=True), tmp_path / "m_bf16.safetensors", torch.bfloat16)


@pytest.mark.parametrize("knobs", KNOBS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "defaults")
def test_every_tuning_writes_the_same_bytes(
    source: Path, tmp_path: Path, knobs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = quantize_file(source, tmp_path / "plain.safetensors").output.read_bytes()
    for name, value in knobs.items():
        monkeypatch.setenv("TUNEHUB_QUANT_" + name, value)
    result = quantize_file(source, tmp_path / "out" / "tuned.safetensors")
    assert result.output.read_bytes() == expected
    assert os.listdir(tmp_path / "out") == ["tuned.safetensors"]
    tuning = result.stats["tuning"]
    for name, value in knobs.items():
        assert str(tuning[name.lower()]) == value
    assert result.stats["seconds"] >= result.stats["reading_done"] > 0
    if knobs.get("PREFETCH_MB"):
        assert result.stats["prefetch_gb"] >= 0


def test_defaults_per_device_and_bad_values() -> None:
    cpu = _Tuning.for_device(False, {})
    assert (cpu.readers, cpu.prefetch_mb, cpu.flush, cpu.pin, cpu.drop) == (1, 0, "fdatasync", "off", 0)
    cuda = _Tuning.for_device(True, {})
    assert cuda.prefetch_mb > 0 and cuda.flush == "range"
    assert _Tuning.for_device(False, {"TUNEHUB_QUANT_PIN": "torch"}).pin == "off"  # no pinning without a GPU
    assert _Tuning.for_device(True, {"TUNEHUB_QUANT_PIN": "register"}).pin == "register"
    for name, value in [("READERS", "0"), ("WORKERS", "x"), ("FLUSH", "sometimes"), ("BUDGET_MB", "-1")]:
        with pytest.raises(QuantizationError, match="TUNEHUB_QUANT_" + name):
            _Tuning.for_device(False, {"TUNEHUB_QUANT_" + name: value})


def test_a_failure_with_prefetch_and_readers_leaves_nothing(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file is cut short after planning: readers hit the end, prefetch threads stop quietly.
    monkeypatch.setenv("TUNEHUB_QUANT_READERS", "3")
    monkeypatch.setenv("TUNEHUB_QUANT_PREFETCH_MB", "1")
    monkeypatch.setenv("TUNEHUB_QUANT_FLUSH", "range")
    copy = tmp_path / "shrinking.safetensors"
    copy.write_bytes(source.read_bytes())
    seen = []

    def shrink(event: dict) -> None:
        if not seen:
            seen.append(event)
            with open(copy, "r+b") as handle:
                handle.truncate(copy.stat().st_size // 2)

    with pytest.raises(QuantizationError, match="ended early"):
        quantize_file(copy, tmp_path / "out" / "o.safetensors", progress=shrink, budget_bytes=1)
    assert not any(TEMP_MARKER in name for name in os.listdir(tmp_path / "out"))
    assert os.listdir(tmp_path / "out") == []


def test_stats_in_the_json_only_when_asked(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["quantize", "--file", str(source), "--out", str(tmp_path / "a.safetensors"), "--json", "-q"]
    assert main(args) == 0
    assert "stats" not in json.loads(capsys.readouterr().out)
    monkeypatch.setenv("TUNEHUB_QUANT_STATS", "1")
    assert main([*args[:4], str(tmp_path / "b.safetensors"), *args[5:]]) == 0
    stats = json.loads(capsys.readouterr().out)["stats"]
    assert stats["tuning"]["workers"] >= 1 and "read_busy_s" in stats and "final_sync_s" in stats
