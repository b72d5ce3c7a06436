"""Which fused int8 GEMM tile a Hopper GPU gets for a row count (no GPU needed to decide)."""

import torch

from tunehub.inference import int8_linear


def test_few_rows_get_the_pointer_tile_and_many_the_tma_tile_on_hopper(monkeypatch) -> None:
    monkeypatch.setitem(int8_linear._capabilities, "cuda", (9, 0))
    hopper = torch.device("cuda")
    assert int8_linear._default_gemm(hopper, 2340) == int8_linear.INT8_GEMM_HOPPER_SMALL
    assert int8_linear._default_gemm(hopper, 32760) == int8_linear.INT8_GEMM_HOPPER
    assert int8_linear.INT8_GEMM_HOPPER_SMALL[0] == "pointer" and int8_linear.INT8_GEMM_HOPPER[0] == "tma"


def test_older_gpus_keep_the_plain_tile(monkeypatch) -> None:
    monkeypatch.setitem(int8_linear._capabilities, "cuda", (8, 0))
    expected = (int8_linear.INT8_GEMM_VARIANT, int8_linear.INT8_GEMM_CONFIG)
    assert int8_linear._default_gemm(torch.device("cuda"), 2340) == expected
    assert int8_linear._default_gemm(torch.device("cuda"), 32760) == expected
