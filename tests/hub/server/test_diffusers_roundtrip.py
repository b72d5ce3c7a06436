"""A tiny random diffusers pipeline published to the server and loaded back through HF_ENDPOINT."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.hub_server import HubServer

REPO = "alice/tiny-ddpm"

# Runs in a fresh interpreter whose only link to the server is the environment (HF_ENDPOINT...).
LOAD_AND_RUN = """
import sys, numpy, torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained(sys.argv[1])
out = pipe(batch_size=1, generator=torch.Generator().manual_seed(42), num_inference_steps=3, output_type="np").images
numpy.save(sys.argv[2], out)
print(type(pipe).__name__)
"""


def build_pipeline(folder: Path) -> np.ndarray:
    torch = pytest.importorskip("torch")
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=20))
    pipe.save_pretrained(folder)
    return pipe(batch_size=1, generator=torch.Generator().manual_seed(42), num_inference_steps=3, output_type="np").images


def test_pipeline_roundtrip(hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "pipeline"
    original = build_pipeline(folder)
    hub_server.use_in_process(monkeypatch)
    api = hub_server.api()
    api.create_repo(REPO)
    api.upload_folder(folder_path=folder, repo_id=REPO, commit_message="tiny DDPM pipeline")
    listed = set(api.list_repo_files(REPO))
    assert {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors"} <= listed
    weights = next(s for s in api.model_info(REPO, files_metadata=True).siblings if s.rfilename.endswith(".safetensors"))
    assert weights.lfs is not None  # weights travelled as LFS

    out_file = tmp_path / "loaded.npy"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(hub_server.env(token=hub_server.read_token))
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_RUN, REPO, str(out_file)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("DDPMPipeline")
    loaded = np.load(out_file)
    assert loaded.shape == original.shape == (1, 8, 8, 3)
    # A pipeline re-loaded from disk differs from the object it was saved from by float
    # rounding (1e-7: different memory layouts pick different kernels), never by more.
    np.testing.assert_allclose(loaded, original, rtol=0, atol=1e-5)
    # ...and the files the client fetched through HF_ENDPOINT are the saved ones, byte for byte.
    snapshots = list((hub_server.cache_dir / "models--alice--tiny-ddpm" / "snapshots").iterdir())
    assert len(snapshots) == 1
    for saved in folder.rglob("*"):
        if saved.is_file():
            relative = saved.relative_to(folder)
            assert (snapshots[0] / relative).read_bytes() == saved.read_bytes(), relative

    # In-process too (what the fixture's use_in_process promises): the same pipeline, the same output.
    import torch
    from diffusers import DiffusionPipeline

    in_process = DiffusionPipeline.from_pretrained(REPO)
    again = in_process(batch_size=1, generator=torch.Generator().manual_seed(42), num_inference_steps=3, output_type="np").images
    np.testing.assert_array_equal(again, loaded)
