"""WanGP's guidance phases and LoRA multipliers, mapped onto diffusers' two-expert pipelines.

Facts from WanGP (its exported settings and LoRA guide):

- ``guidance_phases`` (1-3) splits the denoising into phases at noise levels
  ``switch_threshold`` (phase 1 -> 2) and ``switch_threshold2`` (2 -> 3), on the 0-1000
  timestep scale: a phase starts at the first step whose timestep is <= its threshold.
  Phase 1 uses ``guidance_scale``, phase 2 ``guidance2_scale``, phase 3 ``guidance3_scale``.
- A two-expert model (Wan 2.2 A14B: high-noise ``URLs``, low-noise ``URLs2``) switches to
  the low-noise expert at the start of phase ``model_switch_phase + 1`` (default 1: at
  ``switch_threshold``); WanGP forces at least 2 phases for such models.
- ``loras_multipliers``: one entry per LoRA (split by the registry). An entry is a number, or ``"a,b,c"`` (values spread evenly over the steps), or per phase
  ``"x;y[;z]"`` where each part may again be ``"a,b"`` spread over that phase's steps. Fewer
  parts than phases repeat the last one (or the first when ``model_switch_phase`` is 2);
  more is an error. A missing entry is 1.0.

diffusers' Wan pipelines switch expert and guidance together at one ``boundary_ratio``
(``transformer`` for ``t >= boundary_ratio * 1000``), so two phases map exactly; a third
guidance phase that does not coincide with the expert switch is refused with an
explanation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tunehub.errors import ConfigError


@dataclass(frozen=True)
class PhasePlan:
    """How the denoising is split, before the step count is known."""

    two_experts: bool
    boundary_ratio: float | None  # None: one model, one guidance scale
    switch_threshold: float | None  # on the 0-1000 scale, as WanGP writes it
    guidance_scale: float
    guidance_scale_2: float | None
    phases: int  # phases the LoRA multipliers are written for (1 or 2)
    model_switch_phase: int = 1


def _number(settings: dict[str, Any], key: str, source: str, default: float) -> float:
    value = settings.get(key, default)
    if value is None:
        return default
    try:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: setting '{key}' must be a number, got {value!r}") from None


def ratio_for_threshold(threshold: float) -> float:
    """The smallest ``boundary_ratio`` whose boundary lies strictly above ``threshold``: WanGP
    moves to phase 2 at ``t <= threshold``, diffusers keeps the first expert for ``t >= boundary``."""
    ratio = threshold / 1000.0
    while ratio * 1000.0 <= threshold:
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def phase_plan(settings: dict[str, Any], two_experts: bool, default_boundary: float | None, source: str) -> PhasePlan:
    """The phases of a run from WanGP's settings keys (``guidance_phases``, ``switch_threshold``,
    ``switch_threshold2``, ``guidance2_scale``, ``guidance3_scale``, ``model_switch_phase``)."""
    guidance = _number(settings, "guidance_scale", source, 5.0)
    phases = int(_number(settings, "guidance_phases", source, 2 if two_experts else 1))
    if phases not in (1, 2, 3):
        raise ConfigError(f"{source}: setting 'guidance_phases' must be 1, 2 or 3, got {phases}")
    if two_experts:
        phases = max(phases, 2)  # WanGP: a model with two experts always has 2+ phases
    guidance2 = _number(settings, "guidance2_scale", source, guidance)
    switch_phase = int(_number(settings, "model_switch_phase", source, 1))
    if switch_phase not in (1, 2):
        raise ConfigError(f"{source}: setting 'model_switch_phase' must be 1 or 2, got {switch_phase}")
    threshold_key = "switch_threshold"
    if phases == 3:
        guidance3 = _number(settings, "guidance3_scale", source, guidance2)
        # Three phases collapse to two when the guidance does not change where the expert does not.
        if two_experts and switch_phase == 1 and guidance3 == guidance2:
            phases = 2
        elif two_experts and switch_phase == 2 and guidance2 == guidance:
            phases, guidance2, threshold_key = 2, guidance3, "switch_threshold2"
        elif not two_experts and guidance3 == guidance2:
            phases = 2
        else:
            raise ConfigError(
                f"{source}: 3 guidance phases (guidance {guidance}, {guidance2}, {guidance3}) are not "
                "supported: diffusers' Wan pipelines change guidance only where the expert changes; "
                "set guidance_phases to 2"
            )
    if phases == 1:
        return PhasePlan(two_experts, None, None, guidance, None, 1)
    raw_threshold = settings.get(threshold_key)
    if raw_threshold in (None, 0) and two_experts:
        if default_boundary is None:
            raise ConfigError(f"{source}: a two-expert model needs '{threshold_key}' (the base repo gives no boundary_ratio)")
        return PhasePlan(True, default_boundary, default_boundary * 1000.0, guidance, guidance2, 2, switch_phase)
    threshold = _number(settings, threshold_key, source, 0.0)
    if not 0 <= threshold <= 1000:
        raise ConfigError(f"{source}: setting '{threshold_key}' is a noise level from 0 to 1000, got {threshold}")
    if not two_experts and (threshold == 0 or guidance2 == guidance):
        return PhasePlan(False, None, None, guidance, None, 1)
    return PhasePlan(two_experts, ratio_for_threshold(threshold), threshold, guidance, guidance2, 2, switch_phase)


def switch_step(timesteps: list[float], plan: PhasePlan) -> int | None:
    """Index of the first step run by the second phase (None: one phase), as diffusers decides it."""
    if plan.boundary_ratio is None:
        return None
    boundary = plan.boundary_ratio * 1000.0
    for index, t in enumerate(timesteps):
        if not t >= boundary:
            return index
    return len(timesteps)


# ------------------------------------------------------------------ LoRA multipliers


@dataclass(frozen=True)
class Multiplier:
    """One LoRA's strength: per phase, a list of values spread over that phase's steps
    (``shared``: one list over all steps, whatever the phases)."""

    text: str
    phases: tuple[tuple[float, ...], ...]
    shared: bool

    def per_step(self, steps: int, switch: int | None) -> list[float]:
        """The strength at each of ``steps`` steps; the second phase starts at ``switch``."""
        if self.shared or switch is None:
            return _spread(self.phases[0], steps)
        first = min(max(switch, 0), steps)
        return _spread(self.phases[0], first) + _spread(self.phases[1], steps - first)


def _spread(values: tuple[float, ...], steps: int) -> list[float]:
    """WanGP's time-based values as its LoRA guide states them (30 steps, 3 values: steps 0-9,
    10-19, 20-29): step i takes value ``i * len // steps``, in integers (WanGP's loop adds
    ``len / steps`` as a float, which can shift a boundary by one step)."""
    if steps <= 0:
        return []
    return [values[index * len(values) // steps] for index in range(steps)]


def _values(text: str, where: str) -> tuple[float, ...]:
    parts = text.split(",")
    try:
        return tuple(float(part) for part in parts)
    except ValueError:
        raise ConfigError(f"{where}: '{text}' is not a number or a comma-separated list of numbers") from None


def parse_multiplier(entry: Any, phases: int, where: str, model_switch_phase: int = 1) -> Multiplier:
    """One entry (number or string) for a run of ``phases`` phases."""
    if isinstance(entry, (int, float)) and not isinstance(entry, bool):
        return Multiplier(str(entry), ((float(entry),),), True)
    if not isinstance(entry, str) or not entry.strip():
        raise ConfigError(f"{where}: expected a number or a string such as \"1\", \"0.9,0.8\" or \"1;0\", got {entry!r}")
    text = entry.strip()
    parts = text.split(";")
    if len(parts) == 1:
        return Multiplier(text, (_values(parts[0], where),), True)
    if len(parts) > max(phases, 1):
        raise ConfigError(
            f"{where}: '{text}' gives {len(parts)} phases but this run has {phases} "
            f"(with ';' at most {phases} phase value(s))"
        )
    while len(parts) < phases:
        parts = parts[:1] + parts if model_switch_phase == 2 else parts + parts[-1:]
    return Multiplier(text, tuple(_values(part, where) for part in parts), False)


@dataclass
class LoraRequest:
    """A LoRA to apply: where it comes from and its strength."""

    source: str  # as written (URL, file name or path)
    multiplier: Any = 1.0  # number or WanGP multiplier string
    origin: str = "definition"  # "definition" | "command line"
    path: Any = None  # resolved file
    strengths: list[float] = field(default_factory=list)  # per step, once the steps are known
