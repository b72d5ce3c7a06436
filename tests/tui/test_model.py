"""The TUI's data layer on a real registry: states, sizes, filter, variants, deletion plan."""

from __future__ import annotations

from tests.fixtures.homes import Home
from tests.tui.conftest import ALPHA_BF16, GAMMA_BF16, GAMMA_INT8, local_registry
from tunehub.tui.model import (
    WeightsIndex,
    build_rows,
    execute_deletion,
    fill_states,
    filter_rows,
    format_size,
    plan_deletion,
    variant_rows,
)


def _rows(home: Home, quantization: str = "int8", dtype: str | None = None) -> dict[str, object]:
    registry = local_registry(home)
    rows = build_rows(registry)
    cfg = home.config()
    fill_states(registry, rows, WeightsIndex(cfg.weights_dirs, cfg.home), quantization, dtype)
    return {row.id: row for row in rows}


def test_states_and_sizes_follow_the_preferences(tui_home: Home) -> None:
    rows = _rows(tui_home)
    assert rows["broken"].state == "invalid"  # type: ignore[attr-defined]
    assert rows["hunyuan_beta"].state == "missing"  # type: ignore[attr-defined]
    # int8 preferred: alpha's int8 file is not on disk
    assert rows["t2v_alpha"].state == "missing"  # type: ignore[attr-defined]
    assert rows["t2v_alpha"].size_bytes == ALPHA_BF16  # type: ignore[attr-defined]
    assert rows["t2v_gamma"].state == "quantized"  # type: ignore[attr-defined]
    assert rows["t2v_gamma"].size_bytes == GAMMA_BF16 + GAMMA_INT8  # type: ignore[attr-defined]
    # 16-bit preferred: alpha's bf16 file is there
    rows16 = _rows(tui_home, quantization="bf16")
    assert rows16["t2v_alpha"].state == "present"  # type: ignore[attr-defined]


def test_filter_matches_every_word_in_id_name_or_description(tui_home: Home) -> None:
    rows = list(_rows(tui_home).values())
    assert [r.id for r in filter_rows(rows, "motion")] == ["t2v_alpha"]  # name / description
    assert [r.id for r in filter_rows(rows, "GAMMA")] == ["t2v_gamma"]  # any case
    assert [r.id for r in filter_rows(rows, "anime quantized")] == ["t2v_gamma"]
    assert filter_rows(rows, "anime cinema") == []
    assert {r.id for r in filter_rows(rows, "", architecture="t2v")} == {"t2v_alpha", "t2v_gamma"}
    assert [r.id for r in filter_rows(rows, "", state="invalid")] == ["broken"]


def test_variant_rows_mark_the_pick_and_presence(tui_home: Home) -> None:
    registry = local_registry(tui_home)
    cfg = tui_home.config()
    index = WeightsIndex(cfg.weights_dirs, cfg.home)
    variants = variant_rows(registry.resolve("t2v_gamma", quantization="int8", dtype="bf16"), index)
    assert [(v.file, v.quantization, v.dtype, v.present, v.selected) for v in variants] == [
        ("gamma_bf16.safetensors", "16-bit", "bf16", True, False),
        ("gamma_quanto_bf16_int8.safetensors", "int8", "bf16", True, True),
    ]
    assert variants[1].reason and variants[1].size_bytes == GAMMA_INT8
    picked16 = [v.file for v in variant_rows(registry.resolve("t2v_gamma", quantization="bf16"), index) if v.selected]
    assert picked16 == ["gamma_bf16.safetensors"]


def test_deletion_plan_keeps_files_another_definition_uses(tui_home: Home) -> None:
    # A second definition that shares gamma's 16-bit file.
    tui_home.write_definition(
        "t2v_gamma_copy", {"name": "Copy", "architecture": "t2v", "URLs": ["gamma_bf16.safetensors"]}
    )
    outside = tui_home.root / "elsewhere.safetensors"
    outside.write_bytes(b"x" * 10)
    tui_home.write_definition("t2v_outside", {"name": "Out", "architecture": "t2v", "URLs": [str(outside)]})
    registry = local_registry(tui_home)
    plan = plan_deletion(tui_home.config(), registry, "t2v_gamma")
    assert [p.name for p, _ in plan.delete] == ["gamma_quanto_bf16_int8.safetensors"]
    assert plan.bytes_freed == GAMMA_INT8
    assert {p.name: users for p, users in plan.kept.items()} == {"gamma_bf16.safetensors": ["t2v_gamma_copy"]}
    assert execute_deletion(tui_home.config(), plan) == GAMMA_INT8
    assert not (tui_home.ckpts / "gamma_quanto_bf16_int8.safetensors").exists()
    assert (tui_home.ckpts / "gamma_bf16.safetensors").exists()
    # A file outside the weights folders is never deleted.
    assert plan_deletion(tui_home.config(), registry, "t2v_outside").delete == []
    assert outside.exists()


def test_format_size() -> None:
    assert format_size(0) == "0 B"
    assert format_size(1000) == "1000 B"
    assert format_size(3 * 1024**3) == "3.0 GiB"
    assert format_size(None) == "…"
