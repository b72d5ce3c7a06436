"""mp4 output through imageio-ffmpeg (a pip-installable ffmpeg binary: no system ffmpeg),
and reading input images / videos / masks.

The mp4 is written to a temporary name beside the target, fsynced, then renamed: a crash
never leaves a half-written video under the final name.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from tunehub.errors import InferenceError
from tunehub.safeio import fsync_dir, temp_path_for

CRF = 14  # x264 constant rate factor: visually lossless, small files


def to_uint8_frames(frames: Any) -> Any:
    """(F, H, W, 3) floats in [0, 1] (numpy or torch) -> uint8 numpy array."""
    import numpy as np

    array = frames.detach().float().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise InferenceError(f"expected frames shaped (F, H, W, 3), got {array.shape}")
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return array


def write_mp4(frames: Any, path: str | os.PathLike[str], fps: int = 16) -> Path:
    """Write frames (F, H, W, 3) to ``path`` as H.264 mp4, atomically."""
    import imageio_ffmpeg

    array = to_uint8_frames(frames)
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    height, width = array.shape[1:3]
    if height % 2 or width % 2:
        raise InferenceError(f"{final}: H.264 needs an even width and height, got {width}x{height}")
    tmp = temp_path_for(final)
    writer = imageio_ffmpeg.write_frames(
        str(tmp),
        (width, height),
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",
        quality=None,
        macro_block_size=1,
        ffmpeg_log_level="error",
        output_params=["-crf", str(CRF), "-f", "mp4"],
    )
    try:
        writer.send(None)
        for frame in array:
            writer.send(frame.tobytes())
        writer.close()
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(Exception):
            writer.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return final


def read_video(path: str | os.PathLike[str]) -> tuple[Any, float]:
    """(frames uint8 (F, H, W, 3), fps) of a video file, decoded by imageio-ffmpeg."""
    import imageio_ffmpeg
    import numpy as np

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(chunk, dtype=np.uint8).reshape(height, width, 3) for chunk in reader]
    if not frames:
        return np.zeros((0, height, width, 3), dtype=np.uint8), float(meta.get("fps") or 0)
    return np.stack(frames), float(meta.get("fps") or 0)


def load_image(path: str | os.PathLike[str], size: tuple[int, int] | None = None, mode: str = "RGB") -> Any:
    """A PIL image from ``path`` (resized to ``size`` = (width, height) when given)."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise InferenceError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InferenceError(f"{path}: not an image this program can read: {exc}") from None
    image = image.convert(mode)
    if size is not None and image.size != size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image


def load_frames(
    path: str | os.PathLike[str], size: tuple[int, int], frames: int, mode: str = "RGB"
) -> list[Any]:
    """``frames`` PIL images from a video (or one image repeated), resized to ``size``;
    a shorter video is padded with its last frame."""
    from PIL import Image

    source = Path(path)
    if not source.is_file():
        raise InferenceError(f"video not found: {source}")
    if source.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp"):
        return [load_image(source, size, mode)] * frames
    try:
        array, _ = read_video(source)
    except Exception as exc:
        raise InferenceError(f"{source}: not a video this program can read: {exc}") from None
    images = [Image.fromarray(frame).convert(mode).resize(size, Image.Resampling.BICUBIC) for frame in array[:frames]]
    if not images:
        raise InferenceError(f"{source}: the video has no frames")
    images += [images[-1]] * (frames - len(images))
    return images
