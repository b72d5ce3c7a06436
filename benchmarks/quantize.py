"""Streaming int8 quantization against WanGP's whole-model path, and our loader against requantize.

    python benchmarks/quantize.py                 # Wan 2.1 1.3B-shaped file (2.84 GB), CPU
    python benchmarks/quantize.py --size 14B      # 28.6 GB file: tunehub only (the reference needs ~70 GB RAM)
    python benchmarks/quantize.py --device cuda   # throughput against the file's sequential read rate

In one run: generate a random Wan file in the original key layout (kept for later runs in
--dir unless --cleanup), then run each flow in its own child process, timed by this parent
and with the child's peak RSS taken from outside (``os.wait4``'s ``ru_maxrss``; this parent
never imports torch, so the fork-time RSS it lends the child is small):

- reference: WanGP's path: load the whole file, optimum-quanto ``quantize(weights=qint8)``
  on the block linears, ``freeze``, ``save_file`` (anchor: 16.0 s, 7.1 GB peak RSS here);
- tunehub: ``tunehub quantize --file`` (targets: peak RSS <= 1.0 GiB, wall <= 0.67x reference;
  14B: <= 2 GiB);
- both outputs compared tensor by tensor (they must be byte-identical);
- loading the int8 file into a model built on the meta device: optimum-quanto's
  ``requantize`` against ``tunehub.quant.load`` (target: at most half the time).

With ``--device cuda`` the file's sequential read rate is measured first, under the same
cache state, and tunehub's throughput is reported against it (target >= 70%). The disk's
other limits are measured in the same run (``--no-disk-tests`` skips them): a sequential
write of the output's size with ``fdatasync`` every 256 MiB, and reading the input while
writing that much at the same time, which bounds any quantizer on this disk (it must do
both): tunehub is reported against that ceiling too. Then tunehub runs under several
pipeline tunings (``TUNEHUB_QUANT_*`` environment variables, see ``tunehub.quant.stream._Tuning``;
``--variant LABEL:KEY=VALUE,...`` to choose them, the built-in list otherwise), each from a
cold cache with its own output deleted first, each with its stage timings, so one run on the
GPU machine tells which tuning is best; ``--deadline`` skips the variants that would not fit.
The RESULT lines are those of the first variant (the defaults). ``--hash`` checks that every
variant wrote the same bytes (and, on 1.3B, the same as the CPU path).

Prints ``os.getloadavg()`` so numbers can be judged on a shared machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GiB = 1024**3

SIZES = {
    # dim, ffn_dim, layers
    "tiny": (256, 512, 2),  # a dry run of the benchmark itself
    "1.3B": (1536, 8960, 30),
    "14B": (5120, 13824, 40),
}
TARGET_RSS = {"tiny": 1.0 * GiB, "1.3B": 1.0 * GiB, "14B": 2.0 * GiB}


def wan_shapes(size: str) -> dict[str, tuple[int, ...]]:
    """Wan 2.1 t2v in its original key layout (as the finetune files WanGP users share)."""
    dim, ffn, layers = SIZES[size]
    text_dim, freq_dim, in_dim, out_dim = 4096, 256, 16, 16
    shapes: dict[str, tuple[int, ...]] = {
        "patch_embedding.weight": (dim, in_dim, 1, 2, 2),
        "patch_embedding.bias": (dim,),
        "text_embedding.0.weight": (dim, text_dim),
        "text_embedding.0.bias": (dim,),
        "text_embedding.2.weight": (dim, dim),
        "text_embedding.2.bias": (dim,),
        "time_embedding.0.weight": (dim, freq_dim),
        "time_embedding.0.bias": (dim,),
        "time_embedding.2.weight": (dim, dim),
        "time_embedding.2.bias": (dim,),
        "time_projection.1.weight": (6 * dim, dim),
        "time_projection.1.bias": (6 * dim,),
        "head.head.weight": (out_dim * 4, dim),
        "head.head.bias": (out_dim * 4,),
        "head.modulation": (1, 2, dim),
    }
    for n in range(layers):
        p = f"blocks.{n}."
        shapes[p + "modulation"] = (1, 6, dim)
        for attn in ("self_attn", "cross_attn"):
            for proj in ("q", "k", "v", "o"):
                shapes[p + f"{attn}.{proj}.weight"] = (dim, dim)
                shapes[p + f"{attn}.{proj}.bias"] = (dim,)
            shapes[p + f"{attn}.norm_q.weight"] = (dim,)
            shapes[p + f"{attn}.norm_k.weight"] = (dim,)
        shapes[p + "norm3.weight"] = (dim,)
        shapes[p + "norm3.bias"] = (dim,)
        shapes[p + "ffn.0.weight"] = (ffn, dim)
        shapes[p + "ffn.0.bias"] = (ffn,)
        shapes[p + "ffn.2.weight"] = (dim, ffn)
        shapes[p + "ffn.2.bias"] = (dim,)
    return dict(sorted(shapes.items()))  # safetensors writers sort keys by name


# --- children (each imports torch itself) -------------------------------------------


def child_generate(path: str, size: str) -> None:
    """Write a random bf16 file tensor by tensor (never the whole model in memory)."""
    import torch

    sys.path.insert(0, str(ROOT))
    from tunehub.quant.format import TensorEntry, encode_header
    from tunehub.safeio import atomic_writer

    shapes = wan_shapes(size)
    entries, offset = [], 0
    for key, shape in shapes.items():
        count = 1
        for d in shape:
            count *= d
        entries.append(TensorEntry(key, "BF16", shape, offset, offset + 2 * count))
        offset += 2 * count
    # Random normal values, drawn once into a pool bigger than any tensor; each tensor is a
    # slice of it at a random offset (drawing 14 billion fresh values would take longer
    # than the benchmark itself, and the quantizer's cost does not depend on the values).
    generator = torch.Generator().manual_seed(0)
    largest = max(entry.numel for entry in entries)
    pool = (torch.randn(largest + (1 << 22), generator=generator) * 0.02).to(torch.bfloat16)
    with atomic_writer(path, "wb") as handle:
        handle.write(encode_header(entries, {"format": "pt"}))
        for entry in entries:
            start = int(torch.randint(0, 1 << 22, (1,), generator=generator))
            tensor = pool[start : start + entry.numel]
            handle.write(memoryview(tensor.view(torch.uint8).numpy()))


def child_reference(src: str, dst: str) -> None:
    """WanGP's path: whole model in RAM, quanto quantize + freeze, save."""
    import base64

    import torch
    from optimum.quanto import freeze, qint8, quantization_map, quantize
    from safetensors.torch import load_file, save_file

    started = time.perf_counter()
    state = load_file(src)
    model = _module_tree(state, device=None)
    quantize(model, weights=qint8, include="blocks.*")
    freeze(model)
    qmap = quantization_map(model)
    out = {k: v.contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": "pt",
        "quantization_format": "quanto",
        "quantization_map_base64": base64.b64encode(json.dumps(qmap).encode()).decode(),
    }
    save_file(out, dst, metadata=metadata)
    print(json.dumps({"seconds": time.perf_counter() - started, "layers": len(qmap), "torch": torch.__version__}))


def _module_tree(state, device):
    """A module tree with the file's names: nn.Linear for 2-D '.weight' tensors, bare params elsewhere.

    With ``device=None`` the tensors of ``state`` are assigned; with ``device="meta"`` (and
    ``state`` a dict of shapes) an empty model is built on the meta device.
    """
    import torch
    from torch import nn

    root = nn.Module()

    def node(path):
        module = root
        for part in path.split(".") if path else []:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        return module

    def shape_of(value):
        return tuple(value) if device == "meta" else tuple(value.shape)

    linear = {k[: -len(".weight")] for k, v in state.items() if k.endswith(".weight") and len(shape_of(v)) == 2}
    for name in sorted(linear):
        out_f, in_f = shape_of(state[f"{name}.weight"])
        parent, _, leaf = name.rpartition(".")
        layer = nn.Linear(in_f, out_f, bias=f"{name}.bias" in state, device="meta", dtype=torch.bfloat16)
        if device is None:
            layer.weight = nn.Parameter(state[f"{name}.weight"], requires_grad=False)
            if layer.bias is not None:
                layer.bias = nn.Parameter(state[f"{name}.bias"], requires_grad=False)
        node(parent).add_module(leaf, layer)
    for key, value in state.items():
        name, _, leaf = key.rpartition(".")
        if name in linear:
            continue
        tensor = torch.empty(shape_of(value), device="meta", dtype=torch.bfloat16) if device == "meta" else value
        node(name).register_parameter(leaf, nn.Parameter(tensor, requires_grad=False))
    return root


def _original_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """The 16-bit model's parameter shapes, read from an int8 file's header."""
    from tunehub.quant.format import read_header

    shapes = {}
    for entry in read_header(path).tensors:
        key = entry.key
        if key.endswith(".weight._data"):
            shapes[key[: -len("._data")]] = entry.shape
        elif key.endswith((".weight._scale", ".input_scale", ".output_scale")):
            continue
        else:
            shapes[key] = entry.shape
    return shapes


def child_load(path: str, which: str, device: str = "cpu") -> None:
    """Load the int8 file into a model built on the meta device, onto ``device``: requantize or tunehub."""
    import torch

    sys.path.insert(0, str(ROOT))
    from tunehub.quant.format import read_quantization_map

    # Imports first (optimum.quanto pulls in transformers: seconds), so only loading is timed.
    from optimum.quanto import requantize
    from optimum.quanto.tensor import QTensor
    from safetensors.torch import load_file

    from tunehub.quant.load import load_quantized_file

    qmap = read_quantization_map(path)
    shapes = _original_shapes(path)
    runs = []
    for _ in range(3):  # a fresh meta model each time; the median of three counts
        model = _module_tree(shapes, device="meta")
        started = time.perf_counter()
        if which == "requantize":
            requantize(model, load_file(path), qmap, device=torch.device(device))
        else:
            load_quantized_file(model, path, device=device, quantization_map=qmap)
        if device != "cpu":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        # Both loaders may leave weights as views of a memory-mapped file (read on first use):
        # also time one read of every page of every weight, so lazy and eager loads compare.
        touched = 0
        for param in list(model.parameters()) + list(model.buffers()):
            assert param.device.type == torch.device(device).type
            for tensor in (param._data, param._scale) if isinstance(param, QTensor) else (param,):
                flat = tensor.detach().reshape(-1).view(torch.uint8)
                touched += int(flat[::4096].sum()) + flat.numel()
        runs.append((seconds, time.perf_counter() - started))
        del model
    seconds, with_touch = sorted(runs)[1]
    print(json.dumps({"seconds": seconds, "with_touch": with_touch, "bytes": touched}))


def child_compare(ours: str, theirs: str) -> None:
    import torch
    from safetensors import safe_open

    with safe_open(ours, "pt") as a, safe_open(theirs, "pt") as b:
        keys_a, keys_b = set(a.keys()), set(b.keys())
        differing = [
            k
            for k in sorted(keys_a & keys_b)
            if not (
                a.get_tensor(k).dtype == b.get_tensor(k).dtype
                and torch.equal(
                    a.get_tensor(k).reshape(-1).view(torch.uint8), b.get_tensor(k).reshape(-1).view(torch.uint8)
                )
            )
        ]
        from tunehub.quant.format import decode_map

        same_map = decode_map(a.metadata()["quantization_map_base64"]) == decode_map(
            b.metadata()["quantization_map_base64"]
        )
    print(json.dumps({"same_keys": keys_a == keys_b, "differing": differing[:5], "same_map": same_map}))


def child_read(path: str) -> None:
    """Sequential read rate of the file: large reads into one reused buffer."""
    buffer = bytearray(64 * 1024 * 1024)
    view = memoryview(buffer)
    started = time.perf_counter()
    total = 0
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(view)
            if not count:
                break
            total += count
    print(json.dumps({"seconds": time.perf_counter() - started, "bytes": total}))


def _write_stream(path: str, nbytes: int) -> float:
    """Write ``nbytes`` sequentially, fdatasync every 256 MiB and fsync at the end: the seconds."""
    chunk = memoryview(os.urandom(64 * 1024 * 1024))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    started = time.perf_counter()
    try:
        done = since_sync = 0
        while done < nbytes:
            count = os.write(fd, chunk[: min(len(chunk), nbytes - done)])
            done += count
            since_sync += count
            if since_sync >= 256 * 1024 * 1024:
                os.fdatasync(fd)
                since_sync = 0
        os.fsync(fd)
        return time.perf_counter() - started
    finally:
        os.close(fd)


def _read_stream(path: str) -> tuple[float, int]:
    buffer = memoryview(bytearray(64 * 1024 * 1024))
    started = time.perf_counter()
    total = 0
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            total += count
    return time.perf_counter() - started, total


def child_write(path: str, nbytes: str) -> None:
    """Sequential write rate with fdatasync every 256 MiB (what a durable output costs)."""
    seconds = _write_stream(path, int(nbytes))
    print(json.dumps({"seconds": seconds, "bytes": int(nbytes)}))


def child_readwrite(src: str, dst: str, nbytes: str) -> None:
    """Read ``src`` while writing ``nbytes`` to ``dst`` (fdatasync every 256 MiB), both at once."""
    import threading

    times: dict = {}

    def read() -> None:
        times["read"], times["bytes_read"] = _read_stream(src)

    def write() -> None:
        times["write"] = _write_stream(dst, int(nbytes))

    started = time.perf_counter()
    threads = [threading.Thread(target=read), threading.Thread(target=write)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    times["seconds"] = time.perf_counter() - started
    times["bytes_written"] = int(nbytes)
    print(json.dumps(times))


# --- parent --------------------------------------------------------------------------


def run_child(args: list[str], label: str, env: dict | None = None, fatal: bool = True) -> dict:
    """Run a child; wall time measured here, peak RSS from os.wait4 (kernel's ru_maxrss)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=None if env is None else {**os.environ, **env}
    )
    stdout, stderr = b"", b""
    # Read pipes first (a child blocked on a full pipe never exits), then reap with wait4.
    stdout = process.stdout.read()
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        print(f"{label} failed ({process.returncode}):\n{stderr.decode(errors='replace')[-3000:]}", file=sys.stderr)
        if not fatal:
            return {"failed": True, "wall": wall}
        raise SystemExit(1)
    text = stdout.decode()
    result = json.loads(text[text.index("{") :]) if "{" in text else {}
    result.update(wall=wall, peak_rss=usage.ru_maxrss * 1024)
    return result


def drop_cache(path: Path) -> None:
    """Evict the file's clean pages (no root needed), so the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm_cache(path: Path) -> None:
    with open(path, "rb", buffering=0) as handle:
        while handle.read(64 * 1024 * 1024):
            pass


def prepare_cache(path: Path, mode: str) -> None:
    # Flush every dirty page first (the generator's, the reference's unsynced output), so
    # that no run pays for the writeback of another.
    os.sync()
    drop_cache(path) if mode == "cold" else warm_cache(path)


def median_run(runs: list[dict]) -> dict:
    """The run with the median wall time (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda run: run["wall"])
    return dict(ordered[(len(ordered) - 1) // 2])


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        role, *rest = sys.argv[2:]
        {
            "generate": child_generate,
            "reference": child_reference,
            "load": child_load,
            "compare": child_compare,
            "read": child_read,
            "write": child_write,
            "readwrite": child_readwrite,
        }[role](*rest)
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="1.3B")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "tunehub-bench-quantize",
        help="where the generated files go (outside the repo: they are GBs)",
    )
    parser.add_argument(
        "--cache", choices=("warm", "cold"), help="page cache before each run (default: warm on cpu, cold on cuda)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each flow, alternating; the median counts")
    parser.add_argument("--no-reference", action="store_true", help="skip WanGP's path (always skipped for 14B)")
    parser.add_argument("--no-loader", action="store_true", help="skip the loader comparison")
    parser.add_argument("--cleanup", action="store_true", help="delete the generated files at the end")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL:KEY=VALUE,...",
        help="a pipeline tuning to run (TUNEHUB_QUANT_KEY=VALUE; DEVICE=cpu for the CPU path); repeatable; "
        "the first one gives the RESULT lines (default on cuda: a built-in list, the defaults first)",
    )
    parser.add_argument("--no-disk-tests", action="store_true", help="cuda: skip the write and read+write tests")
    parser.add_argument("--disk-tests", action="store_true", help="measure the disk on cpu too (a dry run here)")
    parser.add_argument("--hash", action="store_true", help="hash each variant's output (they must all agree)")
    parser.add_argument(
        "--deadline", type=float, default=0, help="seconds from the start after which no further variant starts"
    )
    args = parser.parse_args()
    began = time.perf_counter()
    # Warm: the file read once beforehand, for every run alike. Cold (default on CUDA, and for
    # 14B, which does not fit this machine's page cache anyway): its pages evicted first.
    cache = args.cache or ("cold" if args.device == "cuda" or args.size == "14B" else "warm")
    python = sys.executable
    me = str(Path(__file__).resolve())
    args.dir.mkdir(parents=True, exist_ok=True)
    source = args.dir / f"wan_{args.size}_mbf16.safetensors"
    ours = args.dir / f"wan_{args.size}_quanto_mbf16_int8.safetensors"
    theirs = args.dir / f"wan_{args.size}_reference_int8.safetensors"
    expected_size = 2 * sum(_numel(s) for s in wan_shapes(args.size).values())
    print(f"loadavg at start: {os.getloadavg()}  cpus: {os.cpu_count()}  device: {args.device}  cache: {cache}")

    if not source.is_file() or source.stat().st_size < expected_size:
        free = shutil.disk_usage(args.dir).free
        if free < 1.6 * expected_size + 2e9:
            print(f"not enough disk in {args.dir}: {gb(free)} free, need {gb(1.6 * expected_size + 2e9)}")
            return 1
        generated = run_child([python, me, "_child", "generate", str(source), args.size], "generate")
        print(f"generated {source.name}: {gb(source.stat().st_size)} in {generated['wall']:.1f} s")
    size = source.stat().st_size
    print(f"source: {source} ({gb(size)}, Wan {args.size} original layout, bf16)")

    read_rate = ceiling_rate = None
    if args.device == "cuda" or args.disk_tests:
        prepare_cache(source, cache)
        read = run_child([python, me, "_child", "read", str(source)], "read")
        read_rate = read["bytes"] / read["seconds"]
        print(f"sequential read ({cache}): {read_rate / 1e9:.2f} GB/s ({read['seconds']:.1f} s)")
        if not args.no_disk_tests:
            scratch = args.dir / "disk-test.tmp"
            out_size = int(size * 0.51)  # about the int8 file's size
            try:
                os.sync()
                wrote = run_child([python, me, "_child", "write", str(scratch), str(out_size)], "write")
                print(
                    f"sequential write + fdatasync every 256 MiB: {out_size / wrote['seconds'] / 1e9:.2f} GB/s "
                    f"({gb(out_size)} in {wrote['seconds']:.1f} s)"
                )
                scratch.unlink()
                prepare_cache(source, cache)
                both = run_child(
                    [python, me, "_child", "readwrite", str(source), str(scratch), str(out_size)], "read+write"
                )
                ceiling_rate = size / both["seconds"]
                print(
                    f"read {gb(size)} while writing {gb(out_size)} (fdatasync every 256 MiB): all done in "
                    f"{both['seconds']:.1f} s (read alone done at {both['read']:.1f} s = {size / both['read'] / 1e9:.2f} "
                    f"GB/s, write at {both['write']:.1f} s = {out_size / both['write'] / 1e9:.2f} GB/s); "
                    f"disk total {(size + out_size) / both['seconds'] / 1e9:.2f} GB/s"
                )
                print(
                    f"ceiling for a quantizer on this disk: {ceiling_rate / 1e9:.2f} GB/s of input = "
                    f"{ceiling_rate / read_rate:.0%} of the sequential read rate"
                )
            finally:
                if scratch.exists():
                    scratch.unlink()

    if args.variant == ["all"]:  # the built-in list whatever the device (a dry run on cpu)
        args.variant = []
        variants = list(CUDA_VARIANTS)
    else:
        variants = [_parse_variant(text) for text in args.variant] or (
            list(CUDA_VARIANTS) if args.device == "cuda" else [("default", {})]
        )
    if args.hash and args.size != "14B" and all(knobs.get("DEVICE") != "cpu" for _, knobs in variants):
        # The CPU path's bytes, second: every variant must match them.
        variants.insert(1, ("cpu-path", {"DEVICE": "cpu"}))

    # Runs alternate (reference, tunehub, reference, ...); with --repeat N the median counts.
    run_reference = not (args.size == "14B" or args.no_reference)
    if not run_reference:
        print("reference (WanGP path): skipped" + (" (needs about 70 GB of RAM)" if args.size == "14B" else ""))
    references, tunehubs = [], []
    hashes: dict[str, str] = {}
    last_wall = 0.0
    for _ in range(args.repeat):
        if run_reference:
            prepare_cache(source, cache)
            result = run_child([python, me, "_child", "reference", str(source), str(theirs)], "reference")
            references.append(result)
            print(
                f"reference (load all + quanto quantize/freeze + save): wall {result['wall']:.1f} s "
                f"(work {result['seconds']:.1f} s), peak RSS {result['peak_rss'] / GiB:.2f} GiB"
            )
        for index, (label, knobs) in enumerate(variants):
            elapsed = time.perf_counter() - began
            if args.deadline and index > 0 and elapsed + 1.3 * last_wall + 10 > args.deadline:
                print(f"variant {label}: skipped (the --deadline of {args.deadline:.0f} s would pass)")
                continue
            env = {"TUNEHUB_QUANT_" + key: value for key, value in knobs.items() if key != "DEVICE"}
            env["TUNEHUB_QUANT_STATS"] = "1"
            device = knobs.get("DEVICE", args.device)
            if ours.exists():
                ours.unlink()  # one output at a time: a 14B input and two outputs do not fit some disks
            prepare_cache(source, cache)
            result = run_child(
                [
                    python,
                    "-m",
                    "tunehub",
                    "quantize",
                    "--file",
                    str(source),
                    "--out",
                    str(ours),
                    "--device",
                    device,
                    "--json",
                    "-q",
                ],
                f"tunehub ({label})",
                env=env,
                fatal=index == 0,
            )
            if result.get("failed"):
                continue
            last_wall = result["wall"]
            if index == 0:
                tunehubs.append(result)
            stats = result.get("stats", {})
            line = (
                f"tunehub quantize --file [{label}: {_describe(knobs)}]: wall {result['wall']:.1f} s "
                f"(work {result['seconds']:.1f} s), peak RSS {result['peak_rss'] / GiB:.2f} GiB, "
                f"{gb(result['bytes_written'])} written"
            )
            if read_rate is not None:
                rate = size / result["seconds"]
                line += f"; {rate / 1e9:.2f} GB/s = {rate / read_rate:.0%} of read"
                if ceiling_rate:
                    line += f", {rate / ceiling_rate:.0%} of the read+write ceiling"
                if stats.get("all_written") and stats.get("torch_imported") is not None:
                    # Without the fixed start-up (torch import, plan) before the pipeline began.
                    stream_s = result["seconds"] - stats["torch_imported"]
                    line += f" ({size / stream_s / 1e9:.2f} GB/s after torch's import)"
            print(line)
            if stats:
                shown = {k: v for k, v in stats.items() if k != "tuning"}
                print(f"    stats: {json.dumps(shown, sort_keys=True)}")
            if args.hash:
                digest = _file_hash(ours)
                hashes.setdefault(digest, label)
                print(f"    blake2b {digest[:16]} (same as {hashes[digest]})")
    reference = median_run(references) if references else None
    tunehub = median_run(tunehubs)
    tunehub["peak_rss"] = max(run["peak_rss"] for run in tunehubs)
    print(f"loadavg after quantizing: {os.getloadavg()}")
    target_rss = TARGET_RSS[args.size]
    print(
        f"RESULT peak RSS: tunehub {tunehub['peak_rss'] / GiB:.2f} GiB vs target <= {target_rss / GiB:.1f} GiB: "
        f"{'PASS' if tunehub['peak_rss'] <= target_rss else 'FAIL'}"
    )
    if reference is not None:
        ratio = tunehub["wall"] / reference["wall"]
        print(
            f"RESULT wall ratio tunehub/reference: {ratio:.2f}x vs target <= 0.67x: {'PASS' if ratio <= 0.67 else 'FAIL'}"
        )
        print(f"RESULT RSS ratio tunehub/reference: {tunehub['peak_rss'] / reference['peak_rss']:.2f}x")
        compared = run_child([python, me, "_child", "compare", str(ours), str(theirs)], "compare")
        identical = compared["same_keys"] and not compared["differing"] and compared["same_map"]
        print(f"RESULT outputs byte-identical to the reference: {'yes' if identical else 'NO ' + str(compared)}")
    if read_rate is not None:
        throughput = size / tunehub["seconds"]
        share = throughput / read_rate
        print(
            f"RESULT throughput {throughput / 1e9:.2f} GB/s = {share:.0%} of the sequential read rate "
            f"vs target >= 70%: {'PASS' if share >= 0.7 else 'FAIL'}"
        )
        if ceiling_rate:
            print(f"RESULT throughput = {throughput / ceiling_rate:.0%} of the disk's read+write ceiling")
    if args.hash:
        print(f"RESULT every variant wrote the same bytes: {'yes' if len(hashes) == 1 else 'NO ' + str(hashes)}")

    if not args.no_loader and args.size == "1.3B":
        times = {}
        for which in ("requantize", "tunehub"):
            prepare_cache(ours, "warm")
            times[which] = run_child(
                [python, me, "_child", "load", str(ours), which, args.device], f"load {which} ({args.device})"
            )
            print(
                f"load int8 file into a meta model on {args.device}, {which}: {times[which]['seconds']:.2f} s, "
                f"{times[which]['with_touch']:.2f} s with every weight page read once "
                f"(child wall {times[which]['wall']:.1f} s with imports), peak RSS {times[which]['peak_rss'] / GiB:.2f} GiB"
            )
        ratio = times["tunehub"]["seconds"] / times["requantize"]["seconds"]
        touch_ratio = times["tunehub"]["with_touch"] / times["requantize"]["with_touch"]
        print(
            f"RESULT load ratio tunehub/requantize: {ratio:.2f}x vs target <= 0.5x: {'PASS' if ratio <= 0.5 else 'FAIL'}"
        )
        print(f"RESULT load+read ratio tunehub/requantize: {touch_ratio:.2f}x")
    print(f"loadavg at end: {os.getloadavg()}")
    if args.cleanup:
        for path in (source, ours, theirs):
            if path.exists():
                path.unlink()
        print(f"removed the generated files from {args.dir}")
    return 0


# Pipeline tunings tried on CUDA (TUNEHUB_QUANT_<KEY>): the defaults first, then the old
# pipeline, then one change each, most telling first (a --deadline cuts the tail).
CUDA_VARIANTS: list[tuple[str, dict[str, str]]] = [
    ("defaults", {}),
    ("old", {"PIN": "torch", "READERS": "1", "PREFETCH_MB": "0", "FLUSH": "fdatasync", "DROP": "0"}),
    ("no-prefetch", {"PREFETCH_MB": "0"}),
    ("pin-register", {"PIN": "register"}),
    ("flush-fdatasync", {"FLUSH": "fdatasync"}),
    ("prefetch-4g-4threads", {"PREFETCH_MB": "4096", "PREFETCH_THREADS": "4"}),
    ("prefetch-1g", {"PREFETCH_MB": "1024"}),
    ("readers-2", {"READERS": "2"}),
    ("readers-4-workers-3", {"READERS": "4", "WORKERS": "3"}),
    ("prefetch-willneed", {"PREFETCH": "willneed"}),
    ("pin-torch", {"PIN": "torch"}),
    ("flush-64mb", {"FLUSH_MB": "64"}),
    ("no-drop", {"DROP": "0"}),
    ("defaults-again", {}),
]


def _parse_variant(text: str) -> tuple[str, dict[str, str]]:
    label, _, spec = text.partition(":")
    knobs = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        knobs[key.strip().upper()] = value.strip()
    return label, knobs


def _describe(knobs: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in knobs.items()) or "as shipped"


def _file_hash(path: Path) -> str:
    digest = hashlib.blake2b()
    buffer = memoryview(bytearray(16 * 1024 * 1024))
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            digest.update(buffer[:count])
    return digest.hexdigest()


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


if __name__ == "__main__":
    raise SystemExit(main())
