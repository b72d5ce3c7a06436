"""One Wan 1.3B-shaped generate job on a single-GPU Ray worker, end to end, against the same job run locally.

    python benchmarks/fleet_gpu.py                    # on a CUDA machine: 832x480x81, 10 steps
    python benchmarks/fleet_gpu.py --steps 30         # the definition's usual step count
    python benchmarks/fleet_gpu.py --tiny             # tiny model on CPU: checks the script runs

Everything is real: a ``tunehub hub serve`` holding a base repo and a finetune file, a Ray
head plus one worker node started with ``ray start --num-gpus=1`` (its own worker home), and
the daemon of a fresh home with ``[cluster] gpus_per_job = 1`` submitting the job. The
worker node pulls the finetune through tunehub's own pull into its home, renders on the GPU
Ray gave the actor (``CUDA_VISIBLE_DEVICES``), and hands back the mp4 and its settings, which
land in the submitting home's ``outputs/``.

The finetune is a random-weight transformer of Wan 2.1 1.3B's real shape (tunehub's shipped
config, bf16, 2.8 GB); the VAE is Wan's real-shaped one, random; the text encoder is a
one-layer UMT5 of the real width (4096), random, so that pulling it does not dominate.

Runs, in order:
  1. Ray, cold node: the worker's home is empty (the pull of the finetune and base repo is in its time).
  2. Ray, warm node: the same definition again, another seed (the node's cache holds the files).
  3. Local (the anchor): the same job as 2 through a daemon without ``[cluster]``, whose home
     already holds the files (pulled before timing), same seed as 2.
Printed: each run's wall time (submit to done) and the worker's own pull / load / denoise /
render seconds, the warm-Ray / local ratio, what Ray adds per job, and whether the two videos
of the same seed are the same frames. Both sides run eager (no torch.compile).
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
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # before huggingface_hub is imported

from benchmarks.gpu_generate import random_model
from tests.cluster.conftest import RayCluster, cluster_env, free_port
from tests.daemon.conftest import DaemonProcess
from tests.fixtures.hub_server import HubServer
from tunehub.demo.tiny import TinyModels, base_repo_id, publish_base_repo

ARCH = "t2v_1.3B"
DEFINITION = "fleet_gpu_1_3b"


def log(message: str) -> None:
    print(message, flush=True)


def real_shaped_repo(work: Path, tiny: TinyModels) -> tuple[Path, Path]:
    """(base repo folder, finetune file): 1.3B-shaped transformer, real-shaped VAE, one-layer 4096-wide UMT5."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from tunehub.demo.tiny import make_tokenizer, save_original, to_original_layout, wan_transformer_config
    from tunehub.inference.pipeline import shipped_transformer_config

    config = shipped_transformer_config(ARCH)
    started = time.perf_counter()
    torch.manual_seed(0)
    tokenizer = make_tokenizer()
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=config["text_dim"], d_kv=64, d_ff=1024, num_layers=1, num_heads=8,
        relative_attention_num_buckets=32, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False,
    )).eval()  # fmt: skip
    vae = AutoencoderKLWan().eval()  # diffusers' defaults are Wan 2.1's VAE
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=3.0)  # fmt: skip
    # The pipeline is saved with a tiny placeholder transformer whose folder is then removed:
    # without transformer/config.json tunehub uses the config it ships for the real 1.3B.
    placeholder = WanTransformer3DModel(**wan_transformer_config(ARCH))
    base = work / "base"
    WanPipeline(transformer=placeholder, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                scheduler=scheduler).save_pretrained(base, safe_serialization=True)  # fmt: skip
    shutil.rmtree(base / "transformer")
    model = random_model(config, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    state = {k: v.cpu() for k, v in to_original_layout(ARCH, model.state_dict()).items()}
    count = sum(v.numel() for v in state.values())
    finetune = save_original(state, work / "ckpts" / "fleet_gpu_1_3B_finetune_mbf16.safetensors")
    del model, state
    log(f"(random 1.3B-shaped finetune: {count / 1e9:.2f} B parameters, {finetune.stat().st_size / 1e9:.2f} GB; "
        f"base repo built in {time.perf_counter() - started:.0f} s)")  # fmt: skip
    return base, finetune


def write_home(root: Path, hub: str, base: str, finetune_url: str, settings: dict[str, Any],
               address: str | None) -> Path:  # fmt: skip
    (root / "finetunes").mkdir(parents=True)
    toml = [f'endpoint = "{hub}"', "[base_repos]", f'"{ARCH}" = "{base}"', "[daemon]",
            f'pull = "{"none" if address else "all"}"', 'quantize = "never"']  # fmt: skip
    if address:
        toml += ["[cluster]", f'address = "{address}"', "gpus_per_job = 1", "max_jobs = 2",
                 f'namespace = "g{uuid.uuid4().hex[:6]}"']  # fmt: skip
    (root / "tunehub.toml").write_text("\n".join(toml) + "\n")
    definition = {**settings, "model": {"name": "Fleet GPU 1.3B", "architecture": ARCH, "URLs": [finetune_url]}}
    (root / "finetunes" / f"{DEFINITION}.json").write_text(json.dumps(definition, indent=4))
    return root


def run_job(root: Path, env: dict[str, str], seed: int, params: dict[str, Any], wait_pull: bool,
            timeout: float) -> dict[str, Any]:  # fmt: skip
    daemon = DaemonProcess(root, env).start()
    try:
        if wait_pull:  # the local anchor pulls first (pull = "all"); not timed
            deadline = time.monotonic() + timeout
            while not list((root / "ckpts").glob("*.safetensors")) and time.monotonic() < deadline:
                time.sleep(0.5)
            while any(j["state"] not in ("done", "failed") for j in daemon.client.jobs()):
                time.sleep(0.5)
        started = time.perf_counter()
        job_id = daemon.client.submit_job("generate", DEFINITION, seed=seed, **params)["id"]
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = next(j for j in daemon.client.jobs() if j["id"] == job_id)
            if job["state"] in ("done", "failed", "cancelled"):
                break
            time.sleep(0.2)
        wall = time.perf_counter() - started
    finally:
        daemon.stop()
    if job.get("state") != "done":
        raise SystemExit(f"job {job_id} in {root}: {job.get('state')}: {job.get('last_error')}\n{daemon.stderr_text()[-3000:]}")
    result = dict(job["result"] or {})
    result["wall"] = wall
    return result


def fetch_base(home: Path, env: dict[str, str]) -> None:
    code = ("import sys; from pathlib import Path; from tunehub.config import load_config; "
            "from tunehub.inference.pipeline import fetch_base_repo; fetch_base_repo(load_config(Path(sys.argv[1])), sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, str(home), ARCH], env=env, check=True)


def same_frames(a: Path, b: Path) -> str:
    import numpy as np

    from tunehub.inference.video import read_video

    frames_a, _ = read_video(a)
    frames_b, _ = read_video(b)
    if frames_a.shape != frames_b.shape:
        return f"different shapes {frames_a.shape} vs {frames_b.shape}"
    diff = np.abs(frames_a.astype(np.int16) - frames_b.astype(np.int16))
    same_bytes = a.read_bytes() == b.read_bytes()
    return f"max |diff| {int(diff.max())} of 255, mean {float(diff.mean()):.3f}; mp4 bytes {'identical' if same_bytes else 'differ'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU: checks the script runs")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--resolution", default="832x480")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for each job")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="thfgpu-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {"prompt": "a red fox runs through fresh snow", "resolution": args.resolution,
                                "video_length": args.frames, "num_inference_steps": args.steps, "seed": 1}  # fmt: skip
    params: dict[str, Any] = {}
    if args.tiny:  # on a CPU machine the node still declares one GPU, so Ray places num_gpus=1 as on a GPU box
        settings.update(resolution="32x32", video_length=5, num_inference_steps=2)
        params["device"] = "cpu"
    server = HubServer(work / "hub-root", home=work / "hf-home").start()
    cluster: RayCluster | None = None
    try:
        tiny = TinyModels(root=work / "tiny")
        started = time.perf_counter()
        if args.tiny:
            base_folder, finetune = tiny.base_repo(ARCH), tiny.finetune(ARCH)["transformer"]
        else:
            base_folder, finetune = real_shaped_repo(work, tiny)
        base = publish_base_repo(server, base_folder, base_repo_id(ARCH, tag="-gpu"))
        api = server.api()
        api.create_repo("alice/fleet-gpu")
        api.upload_file(path_or_fileobj=str(finetune), path_in_repo=finetune.name, repo_id="alice/fleet-gpu")
        url = f"{server.url}/alice/fleet-gpu/resolve/main/{finetune.name}"
        log(f"(published to {server.url} in {time.perf_counter() - started:.0f} s)")
        env = cluster_env(server)
        env.update(TUNEHUB_NO_COMPILE="1", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
        (work / "ray").mkdir(exist_ok=True)
        cluster = RayCluster(root=work / "ray", port=free_port(), env=env)
        cluster.start_head()
        cpus = "--num-cpus=2" if args.tiny else f"--num-cpus={min(8, os.cpu_count() or 1)}"
        cluster.add_worker("w1", work / "ray" / "w1", {}, node_args=[cpus, "--num-gpus=1"])
        rows: list[tuple[str, dict[str, Any]]] = []
        for label, name, seed in (("Ray, cold node", "cold", 11), ("Ray, warm node", "warm", 12)):
            home = write_home(work / name, server.url, base, url, settings, cluster.address)
            rows.append((label, run_job(home, cluster.env, seed, params, wait_pull=False, timeout=args.timeout)))
            log(f"({label}: {rows[-1][1]['wall']:.1f} s on gpu {rows[-1][1].get('gpu')}, node {rows[-1][1].get('node_id')})")
        local_home = write_home(work / "local", server.url, base, url, settings, None)
        fetch_base(local_home, env)  # the warm Ray node has it cached: so does the anchor
        rows.append(("local daemon (anchor)", run_job(local_home, env, 12, params, wait_pull=True, timeout=args.timeout)))
        shape = f"{settings['resolution']}x{settings['video_length']}, {settings['num_inference_steps']} steps"
        log(f"\none {'tiny' if args.tiny else 'Wan 1.3B-shaped random-weight'} generate job ({shape}) through the daemon")
        log(f"{'run':<24} {'wall s':>8} {'pull s':>7} {'load s':>7} {'denoise s':>9} {'render s':>8}  device / gpu")
        def cell(row: dict[str, Any], key: str, width: int) -> str:  # a local job reports no pull or render time
            return f"{row[key]:>{width}.1f}" if isinstance(row.get(key), (int, float)) else f"{'-':>{width}}"

        for label, row in rows:
            log(f"{label:<24} {row['wall']:>8.1f} {cell(row, 'pull_seconds', 7)} {cell(row, 'load_seconds', 7)} "
                f"{cell(row, 'denoise_seconds', 9)} {cell(row, 'render_seconds', 8)}  {row.get('device')} / {row.get('gpu', '-')}")
        warm, local = rows[1][1], rows[2][1]
        log(f"\nRay warm node / local daemon: {warm['wall'] / local['wall']:.2f}x the wall time "
            f"({(warm['wall'] - local['wall']) * 1000:+.0f} ms per job)")  # fmt: skip
        log(f"Ray's own share of the warm job (wall - the worker's render): {(warm['wall'] - warm['render_seconds']) * 1000:.0f} ms")
        log(f"same seed, Ray vs local: {same_frames(Path(warm['video']), Path(local['video']))}")
    finally:
        if cluster is not None:
            cluster.stop()
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
