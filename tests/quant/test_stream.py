"""The streaming quantizer's container handling, errors, memory bound, and the --file command."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tests.quant.tiny import TinyWan, save_model
from tunehub.cli.main import main
from tunehub.errors import QuantizationError
from tunehub.quant.format import (
    TensorEntry,
    decode_map,
    encode_header,
    encode_map,
    read_header,
    read_quantization_map,
    sidecar_map_path,
)
from tunehub.quant.stream import plan_quantization, quantize_file
from tunehub.safeio import TEMP_MARKER


@pytest.fixture
def tiny_source(tmp_path: Path) -> Path:
    torch.manual_seed(20)
    return save_model(TinyWan(layers=2), tmp_path / "tiny_wan_mbf16.safetensors", torch.bfloat16)


def test_header_and_map_round_trip(tmp_path: Path) -> None:
    entries = [TensorEntry("a", "BF16", (2, 3), 0, 12), TensorEntry("b.weight._data", "I8", (4,), 12, 16)]
    header = encode_header(entries, {"k": "v"})
    assert len(header) % 8 == 0
    path = tmp_path / "x.safetensors"
    path.write_bytes(header + bytes(16))
    parsed = read_header(path)
    assert parsed.metadata == {"k": "v"}
    assert [(e.key, e.dtype, e.shape, e.start, e.end) for e in parsed.tensors] == [
        (e.key, e.dtype, e.shape, e.start, e.end) for e in entries
    ]
    qmap = {"blocks.0.ffn.0": {"weights": "qint8", "activations": "none"}}
    assert decode_map(encode_map(qmap)) == qmap
    assert sidecar_map_path(tmp_path / "m_quanto_int8.safetensors").name == "m_quanto_int8_map.json"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"abc", "shorter than 8 bytes"),
        (struct.pack("<Q", 10**6) + b"{}", "does not fit"),
        (struct.pack("<Q", 4) + b"nope", "not JSON"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
        (
            struct.pack("<Q", 60) + b'{"w":{"dtype":"BF16","shape":[4],"data_offsets":[0,6]}}'.ljust(60) + bytes(8),
            "do not match",
        ),
    ],
)
def test_broken_files_are_named_in_the_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(QuantizationError, match=message) as info:
        quantize_file(path, tmp_path / "out.safetensors")
    assert str(path) in str(info.value)
    assert os.listdir(tmp_path) == ["broken.safetensors"]


def test_damaged_maps_are_errors(tmp_path: Path) -> None:
    with pytest.raises(QuantizationError, match="base64"):
        decode_map("%%%")
    path = tmp_path / "q.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    sidecar_map_path(path).write_text('{"a": 3}', encoding="utf-8")
    with pytest.raises(QuantizationError, match="q_map.json"):
        read_quantization_map(path)


def test_refuses_quantized_input_unknown_layout_and_bad_patterns(tiny_source: Path, tmp_path: Path) -> None:
    done = quantize_file(tiny_source, tmp_path / "done.safetensors").output
    with pytest.raises(QuantizationError, match="already quantized"):
        quantize_file(done, tmp_path / "again.safetensors")
    other = tmp_path / "llm.safetensors"
    save_file({"model.layers.0.mlp.weight": torch.zeros(4, 4, dtype=torch.bfloat16)}, str(other))
    with pytest.raises(QuantizationError, match="--layers"):
        quantize_file(other, tmp_path / "o.safetensors")
    with pytest.raises(QuantizationError, match="matches"):
        quantize_file(tiny_source, tmp_path / "o.safetensors", layers="nothing.*")
    assert quantize_file(other, tmp_path / "o.safetensors", layers="model.layers.*").quantized_layers == 1
    with pytest.raises(QuantizationError, match="must not be the input"):
        quantize_file(tiny_source, tiny_source)
    fp32 = save_model(TinyWan(layers=1), tmp_path / "fp32.safetensors", torch.float32)
    with pytest.raises(QuantizationError, match="--dtype"):
        quantize_file(fp32, tmp_path / "o32.safetensors")
    assert quantize_file(fp32, tmp_path / "o32.safetensors", dtype="bf16").dtype == "bf16"


def test_truncated_source_leaves_nothing(tiny_source: Path, tmp_path: Path) -> None:
    data = tiny_source.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) - 100])
    with pytest.raises(QuantizationError, match="do not match its shape"):
        quantize_file(truncated, tmp_path / "out" / "o.safetensors")
    assert not (tmp_path / "out" / "o.safetensors").exists()


def test_file_truncated_while_streaming_leaves_nothing(tiny_source: Path, tmp_path: Path) -> None:
    # The file shrinks after the first tensor is done: the reader hits the end of file
    # mid-stream; the error names the file and neither output nor temporary remains.
    copy = tmp_path / "shrinking.safetensors"
    copy.write_bytes(tiny_source.read_bytes())
    plan = plan_quantization(copy)

    def shrink(event: dict) -> None:
        if event["status"] == "quantizing" and copy.stat().st_size > plan.header.data_start:
            with open(copy, "r+b") as handle:
                handle.truncate(plan.header.data_start + plan.units[-1].source.start)

    out = tmp_path / "o.safetensors"
    with pytest.raises(QuantizationError, match="ended early") as info:
        quantize_file(copy, out, progress=shrink, budget_bytes=1)
    assert str(copy) in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["shrinking.safetensors", "tiny_wan_mbf16.safetensors"]


@pytest.mark.parametrize("with_f64", [False, True])
def test_layout_keeps_every_tensor_aligned_and_int8_on_64_bytes(
    tiny_source: Path, tmp_path: Path, with_f64: bool
) -> None:
    mixed = tmp_path / "mixed.safetensors"
    tensors = {k: v.clone() for k, v in safe_open_all(tiny_source).items()}
    tensors["extra.f32"] = torch.randn(3)  # odd 4-byte count
    tensors["extra.u8"] = torch.zeros(5, dtype=torch.uint8)  # odd 1-byte count
    if with_f64:
        tensors["extra.f64"] = torch.randn(1, dtype=torch.float64)
    save_file(tensors, str(mixed))
    out = quantize_file(mixed, tmp_path / "o.safetensors").output
    header = read_header(out)
    for entry in header.tensors:
        size = {"F64": 8, "F32": 4, "BF16": 2}.get(entry.dtype, 1)
        assert (header.data_start + entry.start) % size == 0, entry
        # With 8-byte tensors and an odd count of 4-byte elements no header padding can put
        # the int8 block on 64 bytes (safetensors allows no gaps); the loader copies then.
        if entry.key.endswith("._data") and not with_f64:
            assert (header.data_start + entry.start) % 64 == 0, entry
    with safe_open(str(out), "pt") as handle:
        assert torch.equal(handle.get_tensor("extra.f32"), tensors["extra.f32"])  # fp32 extras stay fp32
        assert torch.equal(handle.get_tensor("extra.u8"), tensors["extra.u8"])


def safe_open_all(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def test_progress_events_and_stale_temporaries(tiny_source: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.safetensors"
    dead_pid = 2**22 + 12345  # above the default pid_max: never a live process
    stale = tmp_path / f".o.safetensors{TEMP_MARKER}{dead_pid}-abcd1234"
    stale.write_bytes(b"left by a killed run")
    events: list[dict] = []
    quantize_file(tiny_source, out, progress=events.append)
    assert not stale.exists()
    completed = [e["completed"] for e in events if e["status"] == "quantizing"]
    assert completed == sorted(completed) and completed[-1] == events[0]["total"]
    assert events[-1]["status"] == "done"


def test_quantize_file_command(tiny_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quantize", "--file", str(tiny_source), "--json", "--dtype", "fp16"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert Path(result["output"]).name == "tiny_wan_quanto_mfp16_int8.safetensors"
    assert result["layout"] == "wan" and result["dtype"] == "fp16"
    assert main(["quantize", "--file", str(tiny_source), "--out", result["output"]]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["quantize", "--file", str(tiny_source), "--out", result["output"], "--force", "-q"]) == 0
    assert main(["quantize", "some_id", "--file", str(tiny_source)]) == 1


# VmHWM is the peak RSS of the process's own memory since exec; ru_maxrss of a child would
# also count the (large) pytest parent it was forked from.
MEMORY_PROBE = textwrap.dedent(
    """
    import re, sys, torch
    from tunehub.quant.stream import quantize_file
    quantize_file(sys.argv[1], sys.argv[2], budget_bytes=int(sys.argv[3]))
    status = open("/proc/self/status").read()
    print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024)
    """
)


def _peak_rss(source: Path, out: Path, budget: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(source), str(out), str(budget)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return int(done.stdout.split()[-1])


def test_peak_memory_is_bounded_by_the_budget_not_the_file(tmp_path: Path) -> None:
    # 40 block linears of 4 MB each (160 MB) against a 16 MB budget: the peak RSS over a tiny
    # run grows by the budget and a few tensors, nowhere near the file size.
    big = {}
    generator = torch.Generator().manual_seed(5)
    for n in range(20):
        for name in ("ffn.0", "ffn.2"):
            big[f"blocks.{n}.{name}.weight"] = torch.randn(1024, 2048, generator=generator).to(torch.bfloat16)
    big_path = tmp_path / "big.safetensors"
    save_file(big, str(big_path))
    size = big_path.stat().st_size
    del big
    small_path = save_model(TinyWan(layers=1), tmp_path / "small.safetensors", torch.bfloat16)
    baseline = _peak_rss(small_path, tmp_path / "small_out.safetensors", 16 * 2**20)
    peak = _peak_rss(big_path, tmp_path / "big_out.safetensors", 16 * 2**20)
    assert size > 160e6
    assert peak - baseline < 64 * 2**20, (peak - baseline, size)


@pytest.mark.parametrize("where", ["header", "tensor data"])
def test_a_failing_write_is_reported_by_name_and_leaves_nothing(tiny_source: Path, tmp_path: Path, where: str) -> None:
    # A file-size limit makes the output's writes fail (EFBIG) in a real subprocess: in the
    # header (main thread) or past it (the writer thread).
    header_size = len(plan_quantization(tiny_source).header_bytes)
    limit = header_size // 2 if where == "header" else header_size + 4096
    out = tmp_path / "out" / "limited.safetensors"
    script = textwrap.dedent(
        """
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
        from tunehub.cli.main import main
        sys.exit(main(["quantize", "--file", sys.argv[1], "--out", sys.argv[2], "-q"]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tiny_source), str(out), str(limit)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert str(out) in done.stderr and "writing failed" in done.stderr and "Traceback" not in done.stderr
    assert os.listdir(out.parent) == []
