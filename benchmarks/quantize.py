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
cache state, and tunehub's throughput is reported against it (target >= 70%).
Prints ``os.getloadavg()`` so numbers can be judged on a shared machine.
"""

from __future__ import annotations

import argparse
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
    "1.3B": (1536, 8960, 30),
    "14B": (5120, 13824, 40),
}
TARGET_RSS = {"1.3B": 1.0 * GiB, "14B": 2.0 * GiB}


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


# --- parent --------------------------------------------------------------------------


def run_child(args: list[str], label: str) -> dict:
    """Run a child; wall time measured here, peak RSS from os.wait4 (kernel's ru_maxrss)."""
    started = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    stdout, stderr = b"", b""
    # Read pipes first (a child blocked on a full pipe never exits), then reap with wait4.
    stdout = process.stdout.read()
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        print(f"{label} failed ({process.returncode}):\n{stderr.decode(errors='replace')[-3000:]}", file=sys.stderr)
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
    args = parser.parse_args()
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

    read_rate = None
    if args.device == "cuda":
        prepare_cache(source, cache)
        read = run_child([python, me, "_child", "read", str(source)], "read")
        read_rate = read["bytes"] / read["seconds"]
        print(f"sequential read ({cache}): {read_rate / 1e9:.2f} GB/s ({read['seconds']:.1f} s)")

    # Runs alternate (reference, tunehub, reference, ...); with --repeat N the median counts.
    run_reference = not (args.size == "14B" or args.no_reference)
    if not run_reference:
        print("reference (WanGP path): skipped" + (" (needs about 70 GB of RAM)" if args.size == "14B" else ""))
    references, tunehubs = [], []
    for _ in range(args.repeat):
        if run_reference:
            prepare_cache(source, cache)
            result = run_child([python, me, "_child", "reference", str(source), str(theirs)], "reference")
            references.append(result)
            print(
                f"reference (load all + quanto quantize/freeze + save): wall {result['wall']:.1f} s "
                f"(work {result['seconds']:.1f} s), peak RSS {result['peak_rss'] / GiB:.2f} GiB"
            )
        prepare_cache(source, cache)
        if ours.exists():
            ours.unlink()
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
                args.device,
                "--json",
                "-q",
            ],
            "tunehub",
        )
        tunehubs.append(result)
        print(
            f"tunehub quantize --file: wall {result['wall']:.1f} s (work {result['seconds']:.1f} s), "
            f"peak RSS {result['peak_rss'] / GiB:.2f} GiB, {gb(result['bytes_written'])} written"
        )
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


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


if __name__ == "__main__":
    raise SystemExit(main())
