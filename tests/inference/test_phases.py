"""WanGP's guidance phases and LoRA multiplier syntax (its LoRA guide's examples)."""

from __future__ import annotations

import pytest

from tunehub.errors import ConfigError
from tunehub.inference.lora import parse_lora_option
from tunehub.inference.phases import (
    parse_multiplier,
    phase_plan,
    ratio_for_threshold,
    switch_step,
)


def test_two_experts_take_switch_threshold_and_guidance2() -> None:
    plan = phase_plan({"guidance_phases": 2, "switch_threshold": 875, "guidance_scale": 4, "guidance2_scale": 3},
                      True, 0.9, "t")  # fmt: skip
    assert plan.two_experts and plan.phases == 2
    assert plan.switch_threshold == 875 and plan.guidance_scale == 4 and plan.guidance_scale_2 == 3
    # WanGP: phase 2 starts at the first t <= 875; diffusers keeps the first expert for t >= boundary
    assert plan.boundary_ratio * 1000 > 875 and plan.boundary_ratio == ratio_for_threshold(875)
    assert switch_step([999.0, 900.0, 875.0, 500.0], plan) == 2
    assert switch_step([999.0, 875.5, 874.9], plan) == 2


def test_two_experts_default_to_the_base_repos_boundary_and_one_guidance() -> None:
    plan = phase_plan({"guidance_scale": 5}, True, 0.875, "t")
    assert plan.boundary_ratio == 0.875 and plan.guidance_scale_2 == 5 and plan.phases == 2
    assert phase_plan({"guidance_phases": 1}, True, 0.9, "t").phases == 2, "two experts: always 2 phases"


def test_one_model_one_phase_unless_guidance_changes() -> None:
    assert phase_plan({"guidance_scale": 5}, False, None, "t").boundary_ratio is None
    plan = phase_plan({"guidance_phases": 2, "switch_threshold": 900, "guidance_scale": 5, "guidance2_scale": 1},
                      False, None, "t")  # fmt: skip
    assert plan.boundary_ratio is not None and not plan.two_experts


def test_three_phases_collapse_or_are_refused() -> None:
    same = {"guidance_phases": 3, "guidance_scale": 3.5, "guidance2_scale": 1, "guidance3_scale": 1,
            "switch_threshold": 900, "switch_threshold2": 500}  # fmt: skip
    assert phase_plan(same, True, 0.9, "t").switch_threshold == 900
    late = {**same, "guidance2_scale": 3.5, "model_switch_phase": 2}
    plan = phase_plan(late, True, 0.9, "t")
    assert plan.switch_threshold == 500 and plan.guidance_scale_2 == 1, "expert and guidance change at threshold 2"
    with pytest.raises(ConfigError, match="3 guidance phases"):
        phase_plan({**same, "model_switch_phase": 2}, True, 0.9, "def 'x'")
    with pytest.raises(ConfigError, match="guidance_phases"):
        phase_plan({"guidance_phases": 4}, True, 0.9, "t")
    with pytest.raises(ConfigError, match="0 to 1000"):
        phase_plan({"switch_threshold": 1200}, True, 0.9, "t")


def test_time_based_multipliers_spread_over_the_steps() -> None:
    # the guide: for 30 steps, 0.9 for steps 0-9, 0.8 for 10-19, 0.7 for 20-29
    steps = parse_multiplier("0.9,0.8,0.7", 2, "m").per_step(30, 12)
    assert steps == [0.9] * 10 + [0.8] * 10 + [0.7] * 10, "time-only values ignore the phases"
    assert parse_multiplier(0.5, 2, "m").per_step(4, 2) == [0.5] * 4


def test_phase_multipliers_follow_the_switch() -> None:
    assert parse_multiplier("1;0", 2, "m").per_step(8, 3) == [1.0] * 3 + [0.0] * 5
    assert parse_multiplier("0;1", 2, "m").per_step(8, 3) == [0.0] * 3 + [1.0] * 5
    # the guide's "0.9,0.8;1.2,1.1,1": two values in the high phase, three in the low one
    assert parse_multiplier("0.9,0.8;1.2,1.1,1", 2, "m").per_step(10, 4) == [0.9, 0.9, 0.8, 0.8] + [1.2, 1.2, 1.1, 1.1, 1.0, 1.0]
    # one phase: the ';' form with fewer parts repeats the last one
    assert parse_multiplier("0.7", 1, "m").per_step(3, None) == [0.7] * 3
    with pytest.raises(ConfigError, match="at most 2"):
        parse_multiplier("0;1;0", 2, "LoRA x")
    with pytest.raises(ConfigError, match="not a number"):
        parse_multiplier("1;abc", 2, "LoRA x")


def test_lora_option_takes_an_optional_strength() -> None:
    assert parse_lora_option("loras/wan/x.safetensors") == ("loras/wan/x.safetensors", "1")
    assert parse_lora_option("x.safetensors:0.8") == ("x.safetensors", "0.8")
    assert parse_lora_option("x.safetensors:1;0") == ("x.safetensors", "1;0")
    assert parse_lora_option("/a/b:c/x.safetensors") == ("/a/b:c/x.safetensors", "1")
    assert parse_lora_option("C:/loras/x.safetensors:0.9,0.5") == ("C:/loras/x.safetensors", "0.9,0.5")
