"""``tunehub demo``: the whole flow (Hub, daemon, int8, publish, generate) offline with tiny models.

:mod:`tunehub.demo.run` drives it; :mod:`tunehub.demo.tiny` builds the deterministic tiny
models (also used by the test suite). Nothing heavy is imported here.
"""

from __future__ import annotations

__all__ = ["run_demo"]


def run_demo(**kwargs: object) -> int:
    """See :func:`tunehub.demo.run.run_demo`."""
    from tunehub.demo.run import run_demo as run

    return run(**kwargs)  # type: ignore[arg-type]
