"""Acceptance: Wan 2.2 (two experts, 5B), VACE 1.3B and the definition's LoRAs, end to end.

Tiny random base repos in diffusers layout are served by a real `tunehub hub serve`; the
finetunes are tiny original-layout files (the two experts of t2v_2_2 / i2v_2_2 in URLs and
URLs2), quantized by `tunehub quantize`. A tiny LoRA in the original Wan LoRA layout
(``diffusion_model.blocks.N.self_attn.q.lora_down/lora_up/alpha``, as Kijai's files) is made
for the tiny model and placed in WanGP's LoRA folder for the architecture.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.tiny_models import TinyModels, generation_home
from tunehub.cli.main import main as tunehub_main
from tunehub.demo.tiny import ARCHS_2_2
from tunehub.inference.video import read_video

SIZE = (32, 32)
FRAMES = 5
STEPS = 4
NEEDS_IMAGE = {"i2v_2_2"}


def _frames(path: Path) -> np.ndarray:
    frames, _ = read_video(path)
    return frames.astype(np.float64)


def make_lora(path: Path, seed: int, rank: int = 4, scale: float = 0.5) -> Path:
    """A LoRA for the tiny Wan transformers (hidden 32, ffn 48), original LoRA layout."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for block in (0, 1):
        for module, (out, inp) in {"self_attn.q": (32, 32), "self_attn.o": (32, 32), "ffn.0": (48, 32)}.items():
            key = f"diffusion_model.blocks.{block}.{module}"
            tensors[f"{key}.lora_down.weight"] = (torch.randn(rank, inp, generator=generator) * scale).to(torch.bfloat16)
            tensors[f"{key}.lora_up.weight"] = (torch.randn(out, rank, generator=generator) * scale).to(torch.bfloat16)
            tensors[f"{key}.alpha"] = torch.tensor(float(rank))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


class Setup:
    def __init__(self, root: Path, image: Path) -> None:
        self.root = root
        self.image = image
        self._done: dict[tuple[Any, ...], tuple[int, Path, dict[str, Any]]] = {}

    def generate(
        self, definition: str, *extra: str, quantization: str = "bf16", arch: str = "", again: bool = False
    ) -> tuple[int, Path, dict[str, Any]]:
        """Run `tunehub generate`; a run already made with the same arguments is reused (CPU is
        scarce) unless ``again``, which runs it once more (the same-seed check)."""
        key = (definition, extra, quantization, arch)
        if key in self._done and not again:
            return self._done[key]
        out = self.root / "videos" / f"{definition}-{quantization}-{uuid.uuid4().hex[:6]}.mp4"
        argv = ["--home", str(self.root), "generate", definition, "--device", "cpu",
                "--quantization", quantization, "--out", str(out), *extra]  # fmt: skip
        if arch in NEEDS_IMAGE and "--image" not in extra:
            argv += ["--image", str(self.image)]
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = tunehub_main([*argv, "--json"])
        outcome = (code, out, json.loads(buffer.getvalue()) if code == 0 else {})
        if code == 0:
            self._done[key] = outcome
        return outcome


def _write_definition(root: Path, name: str, model: dict[str, Any], **settings: Any) -> None:
    definition = {
        "prompt": "a red cat dances in the city at night",
        "resolution": f"{SIZE[0]}x{SIZE[1]}",
        "video_length": FRAMES,
        "num_inference_steps": STEPS,
        "seed": 7,
        **settings,
        "model": model,
    }
    (root / "finetunes" / f"{name}.json").write_text(json.dumps(definition, indent=4), encoding="utf-8")


@pytest.fixture(scope="module")
def setup(tiny_models: TinyModels, hub_server_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    server = hub_server_session
    root = tmp_path_factory.mktemp("generate_2_2_home")
    placed = generation_home(root, server, tiny_models, ARCHS_2_2)
    for arch, files in placed.items():
        model: dict[str, Any] = {"name": f"tiny {arch}", "architecture": arch, "URLs": [files["transformer"].name]}
        settings: dict[str, Any] = {}
        if "transformer2" in files:
            model["URLs2"] = [files["transformer2"].name]
            settings = {"guidance_phases": 2, "switch_threshold": 900, "guidance_scale": 4, "guidance2_scale": 3}
        if "module" in files:
            model["modules"] = [[files["module"].name]]
        _write_definition(root, f"tiny_{arch}", model, **settings)
    lora = make_lora(root / "loras" / "wan" / "tiny_wan_lora.safetensors", seed=5)
    for name, multipliers in (("lora", ["1"]), ("lora_zero", [0]), ("lora_phase", ["1;0"])):
        model = {"name": f"tiny t2v_2_2 + LoRA {multipliers}", "architecture": "t2v_2_2",
                 "URLs": "tiny_t2v_2_2", "URLs2": "tiny_t2v_2_2",
                 "loras": [f"https://huggingface.co/alice/loras/resolve/main/{lora.name}"],
                 "loras_multipliers": multipliers}  # fmt: skip
        _write_definition(root, f"tiny_t2v_2_2_{name}", model, guidance_phases=2, switch_threshold=900,
                          guidance_scale=4, guidance2_scale=3)  # fmt: skip
    from PIL import Image

    rng = np.random.default_rng(0)
    image = root / "start.png"
    Image.fromarray((rng.random((48, 48, 3)) * 255).astype("uint8")).save(image)
    with pytest.MonkeyPatch.context() as monkeypatch:
        server.use_in_process(monkeypatch)
        monkeypatch.setenv("TUNEHUB_NO_COMPILE", "1")
        for arch in ARCHS_2_2:
            assert tunehub_main(["--home", str(root), "quantize", f"tiny_{arch}", "--quiet"]) == 0
        yield Setup(root, image)


@pytest.mark.parametrize("arch", ARCHS_2_2)
def test_generate_16bit_and_int8(setup: Setup, arch: str) -> None:
    definition = json.loads((setup.root / "finetunes" / f"tiny_{arch}.json").read_text())
    assert any("int8" in url for url in definition["model"]["URLs"]), "tunehub quantize appended the int8 file"
    if "URLs2" in definition["model"]:
        assert any("int8" in url for url in definition["model"]["URLs2"]), "and the low-noise expert's"
    if "modules" in definition["model"]:
        assert any("int8" in url for url in definition["model"]["modules"][0]), "and the VACE module"

    code, video16, result16 = setup.generate(f"tiny_{arch}", arch=arch)
    assert code == 0
    frames16 = _frames(video16)
    assert frames16.shape == (FRAMES, SIZE[1], SIZE[0], 3)
    exported = json.loads(video16.with_suffix(".json").read_text())
    assert exported["model_type"] == f"tiny_{arch}" and exported["seed"] == 7
    assert exported["resolution"] == "32x32" and exported["video_length"] == FRAMES
    sheet = video16.with_suffix(".png")
    assert result16["contact_sheet"] == str(sheet) and sheet.is_file()

    code, video8, result8 = setup.generate(f"tiny_{arch}", quantization="int8", arch=arch)
    assert code == 0
    frames8 = _frames(video8)
    assert frames8.shape == frames16.shape
    assert "int8" in json.loads(video8.with_suffix(".json").read_text())["model_filename"]
    assert sum(result8["int8_kernels"].values()) > 0
    if arch in ("t2v_2_2", "i2v_2_2"):
        assert "int8" in json.loads(video8.with_suffix(".json").read_text())["model_filename2"]
        for result in (result16, result8):
            steps = result["experts"]["steps"]
            switch = result["switch_step"]
            assert 0 < switch < STEPS, result["experts"]
            assert steps["transformer"] == list(range(switch)), "the high-noise expert runs first"
            assert steps["transformer_2"] == list(range(switch, STEPS)), "then the low-noise expert"
            assert result["experts"]["switch_threshold"] == 900
            assert result["experts"]["guidance2_scale"] == 3

    if arch in ("t2v_2_2", "ti2v_2_2"):
        code, again, _ = setup.generate(f"tiny_{arch}", arch=arch, again=True)
        assert code == 0
        assert np.array_equal(_frames(again), frames16), "same seed, identical frames"
    code, other_seed, _ = setup.generate(f"tiny_{arch}", "--seed", "8", arch=arch)
    assert code == 0
    seed_difference = np.abs(_frames(other_seed) - frames16).mean()
    int8_difference = np.abs(frames8 - frames16).mean()
    print(f"{arch}: int8 vs 16-bit {int8_difference:.2f}, seed vs seed {seed_difference:.2f}")
    assert seed_difference > 1.0
    assert int8_difference <= 0.25 * seed_difference, (int8_difference, seed_difference)


def test_ti2v_takes_an_optional_start_image(setup: Setup) -> None:
    code, plain, _ = setup.generate("tiny_ti2v_2_2", "--seed", "3")
    code_i, with_image, _ = setup.generate("tiny_ti2v_2_2", "--seed", "3", "--image", str(setup.image))
    assert code == code_i == 0
    assert _frames(with_image).shape == (FRAMES, SIZE[1], SIZE[0], 3)
    assert not np.array_equal(_frames(plain), _frames(with_image)), "the start image conditions the 5B model"


def test_one_model_with_two_guidance_phases(setup: Setup) -> None:
    code, plain, _ = setup.generate("tiny_ti2v_2_2")
    code_p, phased, result = setup.generate(
        "tiny_ti2v_2_2", "--guidance-phases", "2", "--switch-threshold", "900", "--guidance2", "1"
    )
    assert code == code_p == 0
    experts = result["experts"]
    assert experts["two_experts"] is False and 0 < experts["switch_step"] < STEPS
    assert list(experts["steps"]) == ["transformer"], "one model runs both phases"
    assert experts["guidance2_scale"] == 1
    assert not np.array_equal(_frames(plain), _frames(phased)), "the second phase's guidance is used"


def test_boundary_defaults_to_the_base_repos_ratio(setup: Setup) -> None:
    path = setup.root / "finetunes" / "tiny_t2v_2_2.json"
    definition = json.loads(path.read_text())
    bare = setup.root / "finetunes" / "tiny_t2v_2_2_bare.json"
    settings = {k: v for k, v in definition.items() if k not in ("switch_threshold", "guidance2_scale")}
    bare.write_text(json.dumps(settings), encoding="utf-8")
    try:
        code, _, result = setup.generate("tiny_t2v_2_2_bare")
    finally:
        bare.unlink()
    assert code == 0
    assert result["experts"]["boundary_ratio"] == pytest.approx(0.875), "diffusers' config of the base repo"
    assert result["experts"]["guidance2_scale"] == result["experts"]["guidance_scale"] == 4


def test_offload_model_never_holds_both_experts(setup: Setup) -> None:
    from tunehub.config import load_config
    from tunehub.inference.pipeline import build_pipeline, denoise
    from tunehub.registry import Registry

    cfg = load_config(setup.root)
    resolution = Registry.load(cfg).resolve("tiny_t2v_2_2", quantization="bf16")
    built = build_pipeline(cfg, "t2v_2_2", [resolution.transformer.path], device="cpu", offload="model",
                           transformer2_files=[resolution.transformer2.path])  # fmt: skip
    built.pipe.register_to_config(boundary_ratio=0.9)
    import torch

    kwargs = dict(prompt="a cat", negative_prompt="dog", height=32, width=32, num_frames=5, num_inference_steps=4,
                  guidance_scale=4.0, guidance_scale_2=3.0, generator=torch.Generator().manual_seed(0),
                  output_type="np")  # fmt: skip
    denoise(built, kwargs)
    log = built.pipe._tunehub_offloader.resident_log
    assert ("transformer",) in log and ("transformer_2",) in log, log
    assert all(len(resident) == 1 for resident in log), f"one model on the device at a time: {log}"
    assert log.index(("transformer_2",)) > log.index(("transformer",))
    # and the same video as without offload
    code_a, plain, _ = setup.generate("tiny_t2v_2_2", "--seed", "5")
    code_b, offloaded, _ = setup.generate("tiny_t2v_2_2", "--seed", "5", "--offload", "model")
    assert code_a == code_b == 0
    assert np.array_equal(_frames(plain), _frames(offloaded))


def test_definition_lora_changes_the_video_and_multiplier_0_does_not(setup: Setup) -> None:
    code, with_lora, result = setup.generate("tiny_t2v_2_2_lora")
    code_n, without, result_n = setup.generate("tiny_t2v_2_2_lora", "--no-loras")
    code_z, zero, _ = setup.generate("tiny_t2v_2_2_lora_zero")
    assert code == code_n == code_z == 0
    assert result["loras"] and result["loras"][0]["strengths"] == [1.0] * STEPS
    assert result["experts"]["lora_layers"]["transformer"]["fused"] == 6, "16-bit: fused into both experts"
    assert result["experts"]["lora_layers"]["transformer_2"]["fused"] == 6
    assert result_n["loras"] == []
    difference = np.abs(_frames(with_lora) - _frames(without)).mean()
    assert difference > 1.0, difference
    assert np.abs(_frames(zero) - _frames(without)).mean() <= 1.0, "multiplier 0 is the no-LoRA output (1/255)"
    plain_code, plain, _ = setup.generate("tiny_t2v_2_2")  # seed 7, the same settings
    assert plain_code == 0 and np.array_equal(_frames(plain), _frames(without)), "--no-loras is the base model"


def test_per_phase_multiplier_applies_to_the_high_noise_expert_only(setup: Setup) -> None:
    code, phase, result = setup.generate("tiny_t2v_2_2_lora_phase")
    assert code == 0
    switch = result["switch_step"]
    assert result["loras"][0]["strengths"] == [1.0] * switch + [0.0] * (STEPS - switch)
    layers = result["experts"]["lora_layers"]
    assert layers["transformer"]["fused"] == 6 and layers["transformer_2"] == {"fused": 0, "adapters": 0}
    code_full, full, _ = setup.generate("tiny_t2v_2_2_lora")
    code_none, none, _ = setup.generate("tiny_t2v_2_2_lora", "--no-loras")
    assert code_full == code_none == 0
    assert not np.array_equal(_frames(phase), _frames(full))
    assert not np.array_equal(_frames(phase), _frames(none))


def test_int8_lora_is_an_unfused_adapter(setup: Setup) -> None:
    code, with_lora, result = setup.generate("tiny_t2v_2_2_lora", quantization="int8")
    code_n, without, result_n = setup.generate("tiny_t2v_2_2_lora", "--no-loras", quantization="int8")
    assert code == code_n == 0
    assert result["int8_kernels"] == result_n["int8_kernels"], "the int8 layers stay int8"
    layers = result["experts"]["lora_layers"]["transformer"]
    assert layers["adapters"] == 6 and layers["fused"] == 0
    assert np.abs(_frames(with_lora) - _frames(without)).mean() > 1.0
    # the adapter computes what fusing computes: close to the 16-bit LoRA run
    code16, fused, _ = setup.generate("tiny_t2v_2_2_lora")
    code16n, plain16, _ = setup.generate("tiny_t2v_2_2_lora", "--no-loras")
    assert code16 == code16n == 0
    lora_effect = np.abs(_frames(fused) - _frames(plain16)).mean()
    assert np.abs(_frames(with_lora) - _frames(fused)).mean() <= 0.5 * lora_effect


def test_command_line_lora_with_time_based_strength(setup: Setup) -> None:
    lora = setup.root / "loras" / "wan" / "tiny_wan_lora.safetensors"
    code, varying, result = setup.generate("tiny_t2v_2_2", "--lora", f"{lora}:1,0.5")
    assert code == 0
    assert result["loras"][0]["strengths"] == [1.0, 1.0, 0.5, 0.5]
    assert result["loras"][0]["origin"] == "command line"
    exported = json.loads(varying.with_suffix(".json").read_text())
    assert exported["activated_loras"] == [str(lora)] and exported["loras_multipliers"] == "1,0.5"


def test_missing_lora_points_to_pull(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    path = setup.root / "finetunes" / "tiny_t2v_2_2_nolora.json"
    definition = json.loads((setup.root / "finetunes" / "tiny_t2v_2_2_lora.json").read_text())
    definition["model"]["loras"] = ["https://huggingface.co/x/y/resolve/main/absent_lora.safetensors"]
    path.write_text(json.dumps(definition), encoding="utf-8")
    try:
        code = tunehub_main(["--home", str(setup.root), "generate", "tiny_t2v_2_2_nolora", "--device", "cpu"])
    finally:
        path.unlink()
    err = capsys.readouterr().err
    assert code == 1 and "absent_lora.safetensors" in err and "tunehub pull tiny_t2v_2_2_nolora" in err
    assert "--no-loras" in err


def test_three_guidance_phases_are_refused_with_the_reason(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    path = setup.root / "finetunes" / "tiny_t2v_2_2_3p.json"
    definition = json.loads((setup.root / "finetunes" / "tiny_t2v_2_2.json").read_text())
    definition.update(guidance_phases=3, guidance_scale=3.5, guidance2_scale=1, guidance3_scale=1,
                      switch_threshold=965, switch_threshold2=800, model_switch_phase=2)  # fmt: skip
    path.write_text(json.dumps(definition), encoding="utf-8")
    try:
        code = tunehub_main(["--home", str(setup.root), "generate", "tiny_t2v_2_2_3p", "--device", "cpu"])
    finally:
        path.unlink()
    err = capsys.readouterr().err
    assert code == 1 and "3 guidance phases" in err and "guidance_phases" in err
