"""The render fleet: where a daemon's generate job runs.

One interface, two runners. :class:`LocalRunner` renders in the daemon's process (as
before); :class:`RayRunner` hands the job to a Ray cluster (``[cluster]`` in
tunehub.toml) and brings the video back into this home's ``outputs/``. The daemon's
journal stays the truth for both: its job runner claims, retries, cancels and records;
a runner only takes one claimed job and returns its result (or raises).

Importing this package does not import Ray; :mod:`tunehub.cluster.ray_runner` does, and
is loaded only when a ``[cluster]`` is configured.
"""

from __future__ import annotations

from typing import Any, Protocol

from tunehub.cluster.settings import ClusterSettings, cluster_settings
from tunehub.config import Config

__all__ = ["GenerateRunner", "LocalRunner", "RayRunner", "generate_runner", "ClusterSettings", "cluster_settings"]


class GenerateRunner(Protocol):
    """Runs one claimed generate job (``ctx``: the daemon's JobContext) and returns its result."""

    name: str

    def run(self, ctx: Any) -> Any: ...


class LocalRunner:
    """In this process, through :func:`tunehub.inference.generate`."""

    name = "local"

    def run(self, ctx: Any) -> Any:
        from tunehub.daemon.jobs import _capability

        generate = _capability("tunehub.inference", "generate", "generation (tunehub.inference)")
        # Phases and steps reach the events feed (the TUI's form), as the CLI prints them.
        params = dict(ctx.job["params"])
        return generate(ctx.cfg, ctx.registry(), ctx.job["definition_id"], progress=ctx.progress, **params)


class RayRunner:
    """On the Ray cluster of ``[cluster]``: one detached actor per job attempt."""

    name = "ray"

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings

    def run(self, ctx: Any) -> Any:
        from tunehub.daemon.jobs import _capability

        run_generate = _capability("tunehub.cluster.ray_runner", "run_generate", "the Ray render fleet (pip install 'tunehub[ray]')")
        return run_generate(ctx, self.settings)


def generate_runner(cfg: Config) -> GenerateRunner:
    settings = cluster_settings(cfg)
    return RayRunner(settings) if settings is not None else LocalRunner()


def job_slots(cfg: Config, default: int) -> int:
    """How many generate jobs the daemon hands out at once: ``[cluster] max_jobs``, else ``default``."""
    settings = cluster_settings(cfg)
    return settings.max_jobs if settings is not None else default
