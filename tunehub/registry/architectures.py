"""What tunehub knows about each architecture id: one row per id or id pattern.

Any non-empty string is a valid architecture id (WanGP knows over a hundred and adds more
with each release). The registry needs none of this table to list, show, resolve, pull,
verify, publish, sync or delete a definition; the table says, separately, what else
tunehub can do with an architecture:

- ``generate``: tunehub has a diffusers pipeline for it (``tunehub.inference``);
- ``quantize``: tunehub's quantizer has the layer plan of its files (``tunehub.quant.layers``);
- ``context_parallel``: its pipeline can split one video over several GPUs;
- ``lora_dir``: the folder under ``loras/`` WanGP puts its LoRAs in (facts from WanGP's
  family handlers; "WanGP today", LoRAs).

Rows are tried in order: exact ids first, then ``fnmatch`` patterns (``flux2_*``). An id no
row matches is family ``unknown``. To support a new architecture, add (or edit) its row.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from functools import lru_cache

from tunehub.errors import UnsupportedArchitectureError

__all__ = [
    "Architecture",
    "ARCHITECTURE_ROWS",
    "ARCHITECTURES",
    "FAMILY_LABELS",
    "UnsupportedArchitectureError",
    "architecture",
    "is_ltx",
    "require_generate",
    "require_quantize",
]

# family id -> words shown to users
FAMILY_LABELS: dict[str, str] = {
    "wan2.1": "Wan 2.1",
    "wan2.2": "Wan 2.2",
    "hunyuan": "HunyuanVideo",
    "hunyuan1.5": "HunyuanVideo 1.5",
    "ltx": "LTX Video / LTX-2",
    "flux": "Flux",
    "qwen": "Qwen Image",
    "image": "other image models",
    "video": "other video models",
    "audio": "audio and speech",
    "unknown": "not known to tunehub",
}


@dataclass(frozen=True)
class Architecture:
    """One row: an id (or an fnmatch pattern of ids) and what tunehub can do with it."""

    id: str  # the architecture id, or a pattern such as "flux2_*" for a row of the table
    family: str
    label: str = ""
    generate: bool = False
    quantize: bool = False
    context_parallel: bool = False
    lora_dir: str | None = None  # folder name under loras/ (None: WanGP has none for it)
    pipeline: str | None = None  # diffusers pipeline class, where tunehub generates

    @property
    def family_label(self) -> str:
        return FAMILY_LABELS.get(self.family, self.family)

    def can(self) -> str:
        """What tunehub can do with it, in words (for one-line errors and the README table)."""
        extra = [word for word, ok in (("generate", self.generate), ("quantize", self.quantize)) if ok]
        base = "list, show, resolve, pull, verify, publish, sync and delete"
        return f"{base}, {' and '.join(extra)}" if extra else base

    def with_id(self, architecture_id: str) -> Architecture:
        """This row's facts under a concrete id (a pattern row matched ``architecture_id``)."""
        if self.id == architecture_id:
            return self
        return Architecture(
            architecture_id, self.family, self.label, self.generate, self.quantize,
            self.context_parallel, self.lora_dir, self.pipeline,
        )  # fmt: skip


def _wan21(arch_id: str, label: str, lora: str = "wan", **kw: object) -> Architecture:
    return Architecture(arch_id, "wan2.1", label, lora_dir=lora, quantize=True, **kw)  # type: ignore[arg-type]


def _wan22(arch_id: str, label: str, lora: str = "wan", **kw: object) -> Architecture:
    return Architecture(arch_id, "wan2.2", label, lora_dir=lora, quantize=True, **kw)  # type: ignore[arg-type]


def _gen(pipeline: str, context_parallel: bool = False) -> dict[str, object]:
    return {"generate": True, "pipeline": pipeline, "context_parallel": context_parallel}


# One row per id or pattern. Exact ids first, patterns after (first match wins).
ARCHITECTURE_ROWS: tuple[Architecture, ...] = (
    # --- Wan 2.1 (tunehub generates the seed's five; the Wan layer plan covers every Wan file)
    _wan21("t2v", "Wan 2.1 text-to-video 14B", **_gen("WanPipeline", True)),
    _wan21("t2v_1.3B", "Wan 2.1 text-to-video 1.3B", "wan_1.3B", **_gen("WanPipeline", True)),
    _wan21("i2v", "Wan 2.1 image-to-video 480p 14B", "wan_i2v", **_gen("WanImageToVideoPipeline", True)),
    _wan21("i2v_720p", "Wan 2.1 image-to-video 720p 14B", "wan_i2v", **_gen("WanImageToVideoPipeline", True)),
    _wan21("vace_14B", "Wan 2.1 VACE 14B", **_gen("WanVACEPipeline", True)),
    _wan21("vace_1.3B", "Wan 2.1 VACE 1.3B", "wan_1.3B", **_gen("WanVACEPipeline")),
    _wan21("flf2v_720p", "Wan 2.1 first/last frame to video 720p", "wan_i2v"),
    _wan21("fun_inp", "Wan 2.1 Fun InP 14B", "wan_i2v"),
    _wan21("fun_inp_1.3B", "Wan 2.1 Fun InP 1.3B", "wan_i2v"),
    _wan21("fantasy", "Wan 2.1 FantasyTalking", "wan_i2v"),
    _wan21("multitalk", "Wan 2.1 MultiTalk", "wan_i2v"),
    _wan21("infinitetalk", "Wan 2.1 InfiniteTalk", "wan_i2v"),
    _wan21("animate", "Wan 2.2 Animate (Wan 2.1 layout)", "wan_i2v"),
    _wan21("chrono_edit", "Wan ChronoEdit", "wan_i2v"),
    _wan21("steadydancer", "Wan SteadyDancer", "wan_i2v"),
    _wan21("wanmove", "Wan Move", "wan_i2v"),
    _wan21("scail", "Wan SCAIL", "wan_i2v"),
    _wan21("scail2_14B", "Wan SCAIL 2 14B", "wan_i2v"),
    _wan21("scail2_1.3B", "Wan SCAIL 2 1.3B", "wan_i2v"),
    _wan21("shotplan_t2v", "Wan ShotPlan", "wan_shotplan"),
    _wan21("sky_df_14B", "SkyReels V2 diffusion forcing 14B"),
    _wan21("sky_df_1.3B", "SkyReels V2 diffusion forcing 1.3B", "wan_1.3B"),
    # --- Wan 2.2 (14B experts: URLs + URLs2; ti2v_2_2 and its kin: 5B)
    _wan22("t2v_2_2", "Wan 2.2 text-to-video 14B (two experts)", **_gen("WanPipeline")),
    _wan22("i2v_2_2", "Wan 2.2 image-to-video 14B (two experts)", **_gen("WanImageToVideoPipeline")),
    _wan22("i2v_2_2_multitalk", "Wan 2.2 MultiTalk"),
    _wan22("i2v_2_2_svi2pro", "Wan 2.2 SVI 2 Pro"),
    _wan22("vace_14B_2_2", "Wan 2.2 VACE 14B"),
    _wan22("ti2v_2_2", "Wan 2.2 text/image-to-video 5B", "wan_5B", **_gen("WanPipeline")),
    _wan22("lucy_edit", "Wan 2.2 Lucy Edit 5B", "wan_5B"),
    _wan22("kiwi_edit", "Wan 2.2 Kiwi Edit 5B", "wan_5B"),
    _wan22("ovi", "Ovi (Wan 2.2 5B audio-video)", "wan_5B"),
    _wan22("animate2", "Wan 2.2 Animate 2", "wan_animate2"),
    _wan22("alpha2", "Wan 2.2 Alpha"),
    _wan22("shotplan_t2v_2_2", "Wan 2.2 ShotPlan", "wan_shotplan_2_2"),
    # --- HunyuanVideo
    Architecture("hunyuan", "hunyuan", "HunyuanVideo text-to-video", quantize=True, lora_dir="hunyuan",
                 **_gen("HunyuanVideoPipeline")),  # type: ignore[arg-type]
    Architecture("hunyuan_i2v", "hunyuan", "HunyuanVideo image-to-video", quantize=True, lora_dir="hunyuan_i2v",
                 **_gen("HunyuanVideoImageToVideoPipeline")),  # type: ignore[arg-type]
    Architecture("hunyuan_1_5_*", "hunyuan1.5", "HunyuanVideo 1.5", lora_dir="hunyuan_1_5"),
    Architecture("hunyuan_*i2v*", "hunyuan", "HunyuanVideo image-to-video variant", quantize=True,
                 lora_dir="hunyuan_i2v"),
    Architecture("hunyuan*", "hunyuan", "HunyuanVideo variant", quantize=True, lora_dir="hunyuan"),
    # --- LTX (WanGP supports LTX-2 finetunes: listed, resolved, pulled like any other)
    Architecture("ltx2*", "ltx", "LTX-2", lora_dir="ltx2"),
    Architecture("joyai_echo", "ltx", "JoyAI Echo (LTX-2)", lora_dir="ltx2"),
    Architecture("ltx*", "ltx", "LTX Video", lora_dir="ltxv"),
    # --- images
    Architecture("flux2_klein_4b", "flux", "Flux 2 Klein 4B", lora_dir="flux2_klein_4b"),
    Architecture("flux2_klein_9b", "flux", "Flux 2 Klein 9B", lora_dir="flux2_klein_9b"),
    Architecture("flux2_*", "flux", "Flux 2", lora_dir="flux2"),
    Architecture("pi_flux2", "flux", "pi-Flux 2", lora_dir="flux2"),
    Architecture("flux*", "flux", "Flux", lora_dir="flux"),
    Architecture("qwen_image*", "qwen", "Qwen Image", lora_dir="qwen"),
    Architecture("z_image*", "image", "Z-Image", lora_dir="z_image"),
    Architecture("hidream*", "image", "HiDream", lora_dir="hidream_o1"),
    Architecture("krea2*", "image", "Krea 2", lora_dir="krea2"),
    Architecture("ideogram*", "image", "Ideogram"),
    # --- other video models WanGP runs
    Architecture("k5_*", "video", "Kandinsky 5"),
    Architecture("longcat*", "video", "LongCat"),
    Architecture("magi_human*", "video", "MAGI human"),
    Architecture("minimax_h3*", "video", "MiniMax H3"),
    # --- Wan derivatives named by their own project (after the exact ids above)
    _wan21("phantom_14B", "Phantom 14B"),
    _wan21("phantom_1.3B", "Phantom 1.3B", "wan_1.3B"),
    _wan21("recam_1.3B", "ReCamMaster 1.3B", "wan_1.3B"),
    _wan21("bernini_1.3B", "Bernini 1.3B", "wan_1.3B"),
    _wan21("*_1.3B", "Wan 2.1 1.3B variant", "wan_1.3B"),
    _wan21("vace_*", "Wan 2.1 VACE variant"),
    _wan21("standin", "Stand-In"),
    _wan21("lynx*", "Lynx"),
    _wan21("alpha*", "Wan Alpha"),
    _wan21("mocha", "MoCha"),
    _wan21("vista4d", "Vista4D"),
    _wan21("bernini", "Bernini"),
    # --- audio and speech
    Architecture("ace_step*", "audio", "ACE-Step"),
    Architecture("chatterbox*", "audio", "Chatterbox"),
    Architecture("index_tts*", "audio", "IndexTTS"),
    Architecture("qwen3_tts*", "audio", "Qwen3 TTS"),
    Architecture("stable_audio*", "audio", "Stable Audio"),
    Architecture("heartmula*", "audio", "HeartMuLa"),
    Architecture("kugelaudio*", "audio", "KugelAudio"),
    Architecture("omnivoice*", "audio", "OmniVoice"),
    Architecture("minimax_music*", "audio", "MiniMax Music"),
    Architecture("scenema_audio*", "audio", "Scenema audio"),
    Architecture("dramabox_audio*", "audio", "DramaBox audio"),
    Architecture("yue*", "audio", "YuE"),
)

_EXACT: dict[str, Architecture] = {}
for _row in ARCHITECTURE_ROWS:
    if not any(ch in _row.id for ch in "*?["):
        _EXACT.setdefault(_row.id, _row)
_PATTERNS: tuple[Architecture, ...] = tuple(r for r in ARCHITECTURE_ROWS if any(ch in r.id for ch in "*?["))

# The ids tunehub can generate with (kept under this name for older callers).
ARCHITECTURES: dict[str, Architecture] = {row.id: row for row in ARCHITECTURE_ROWS if row.generate}


@lru_cache(maxsize=4096)
def architecture(architecture_id: str) -> Architecture:
    """The row for an id: its exact row, else the first pattern that matches, else ``unknown``."""
    row = _EXACT.get(architecture_id)
    if row is not None:
        return row
    for pattern_row in _PATTERNS:
        if fnmatch.fnmatchcase(architecture_id, pattern_row.id):
            return pattern_row.with_id(architecture_id)
    return Architecture(architecture_id, "unknown", "")


def is_ltx(architecture_id: str) -> bool:
    return architecture(architecture_id).family == "ltx"


def _require(architecture_id: str, what: str, ok: bool, row: Architecture) -> None:
    if ok:
        return
    family = f"family {row.family}" if row.family != "unknown" else "a family tunehub does not know"
    raise UnsupportedArchitectureError(
        f"architecture '{architecture_id}' ({family}): tunehub cannot {what} it; it can {row.can()} it"
    )


def require_generate(architecture_id: str) -> Architecture:
    """The row, or one line naming the architecture and what tunehub can do with it."""
    row = architecture(architecture_id)
    _require(architecture_id, "generate with", row.generate, row)
    return row


def require_quantize(architecture_id: str) -> Architecture:
    row = architecture(architecture_id)
    _require(architecture_id, "quantize", row.quantize, row)
    return row
