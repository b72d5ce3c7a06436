"""Does this machine's GPU run bf16 fast? (WanGP: compute capability >= 8), without importing torch.

``TUNEHUB_GPU_CAPABILITY`` overrides the probe ("8.6", or "none" for no GPU): tests use it,
and so can a user whose GPU the probe cannot see. Otherwise torch is asked when it is
already imported, else ``nvidia-smi``; the answer is computed once per process.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache

__all__ = ["bf16_support", "gpu_capability"]


@lru_cache(maxsize=1)
def _probe() -> tuple[float, str] | None:
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                major, minor = torch.cuda.get_device_capability()
                return major + minor / 10, torch.cuda.get_device_name()
        except Exception:  # noqa: BLE001 - a broken CUDA setup is "no GPU" here
            return None
        return None
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=compute_cap,name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout
        cap, _, name = out.splitlines()[0].partition(",")
        return float(cap), name.strip()
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def gpu_capability() -> tuple[float, str] | None:
    """(compute capability, GPU name) of the first GPU, or None without one."""
    override = os.environ.get("TUNEHUB_GPU_CAPABILITY")
    if override:
        if override.strip().lower() in ("none", "0", "cpu"):
            return None
        try:
            return float(override), f"GPU (compute capability {override}, TUNEHUB_GPU_CAPABILITY)"
        except ValueError:
            return None
    return _probe()


def bf16_support() -> tuple[bool | None, str]:
    """(True/False, the GPU's name), or (None, "") without a GPU."""
    found = gpu_capability()
    if found is None:
        return None, ""
    capability, name = found
    return capability >= 8, name
