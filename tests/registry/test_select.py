"""WanGP's variant-selection rule, on the cases that trip people up."""

from __future__ import annotations

import pytest

from tunehub.registry.naming import parse_variant_name, quantized_filename
from tunehub.registry.select import explain_variant, select_variant

HUB = "https://huggingface.co/DeepBeepMeep/Wan2.1/resolve/main/"
WAN = [
    HUB + "wan2.1_text2video_14B_mbf16.safetensors",
    HUB + "wan2.1_text2video_14B_quanto_mbf16_int8.safetensors",
    HUB + "wan2.1_text2video_14B_quanto_mfp16_int8.safetensors",
]


@pytest.mark.parametrize(
    ("quantization", "dtype", "expected"),
    [
        ("int8", "bf16", 1),  # mbf16 matches bf16
        ("int8", "fp16", 2),
        ("fp8", "bf16", 1),  # no fp8 file: falls back to the int8 token
        ("fp8", "fp16", 2),
        ("bf16", "bf16", 0),  # 16-bit: always the first listed
        ("bf16", "fp16", 0),
    ],
)
def test_wan_base_lists(quantization: str, dtype: str, expected: int) -> None:
    assert select_variant(WAN, quantization, dtype) == WAN[expected]


def test_no_choice_and_single_choice() -> None:
    assert select_variant([], "int8", "bf16") is None
    only = ["x_fp16.safetensors"]
    # one URL is taken whatever the preferences, even a 16-bit one under int8
    assert select_variant(only, "int8", "bf16") == only[0]
    assert select_variant(["a_quanto_fp16_int8.safetensors"], "bf16", "bf16") == "a_quanto_fp16_int8.safetensors"


def test_upper_case_dtype_is_matched_but_only_exactly_upper_or_lower() -> None:
    choices = ["m_BF16.safetensors", "m_quanto_Fp16_int8.safetensors", "m_quanto_BF16_int8.safetensors"]
    assert select_variant(choices, "int8", "bf16") == "m_quanto_BF16_int8.safetensors"
    # "Fp16" is neither "fp16" nor "FP16": the dtype filter keeps nothing, so the first int8 wins
    assert select_variant(choices, "int8", "fp16") == "m_quanto_Fp16_int8.safetensors"


def test_upper_case_quantization_token_is_found_case_insensitively() -> None:
    choices = ["m_bf16.safetensors", "m_QUANTO_BF16_INT8.safetensors"]
    assert select_variant(choices, "int8", "bf16") == choices[1]


def test_only_fp8_files_under_int8_preference() -> None:
    choices = ["m_bf16.safetensors", "m_bf16_fp8.safetensors", "m_fp16_fp8.safetensors"]
    assert select_variant(choices, "int8", "fp16") == "m_fp16_fp8.safetensors"
    assert select_variant(choices, "int8", "bf16") == "m_bf16_fp8.safetensors"


def test_fp8_preference_prefers_fp8_over_int8() -> None:
    choices = ["m_bf16.safetensors", "m_quanto_bf16_int8.safetensors", "m_bf16_fp8.safetensors"]
    assert select_variant(choices, "fp8", "bf16") == "m_bf16_fp8.safetensors"
    assert select_variant(choices, "int8", "bf16") == "m_quanto_bf16_int8.safetensors"


def test_dtypeless_quanto_int8_is_picked_for_either_dtype() -> None:
    choices = ["m_bf16.safetensors", "m_quanto_int8.safetensors"]
    assert select_variant(choices, "int8", "bf16") == "m_quanto_int8.safetensors"
    assert select_variant(choices, "int8", "fp16") == "m_quanto_int8.safetensors"


def test_no_quantized_file_falls_back_to_first() -> None:
    choices = ["m_fp16.safetensors", "m_bf16.safetensors"]
    selection = explain_variant(choices, "int8", "bf16")
    assert selection.choice == "m_fp16.safetensors"
    assert "no file name contains int8" in selection.reason


def test_only_base_name_counts_not_the_folder() -> None:
    # the repo folder says int8 and bf16, the file names do not
    choices = ["https://h/int8_bf16/resolve/main/a_fp16.safetensors", "https://h/x/resolve/main/b_quanto_fp16_int8.safetensors"]
    assert select_variant(choices, "int8", "bf16") == choices[1]


@pytest.mark.parametrize(
    ("name", "dtype", "expected"),
    [
        ("wan2.1_text2video_14B_mbf16.safetensors", "bf16", "wan2.1_text2video_14B_quanto_mbf16_int8.safetensors"),
        ("wan2.1_text2video_14B_mbf16.safetensors", "fp16", "wan2.1_text2video_14B_quanto_mfp16_int8.safetensors"),
        ("Wan14BT2VFusioniX_fp16.safetensors", "fp16", "Wan14BT2VFusioniX_quanto_fp16_int8.safetensors"),
        ("Wan14BT2VFusioniX_fp16.safetensors", "bf16", "Wan14BT2VFusioniX_quanto_bf16_int8.safetensors"),
        ("hunyuan_video_720_bf16.safetensors", "bf16", "hunyuan_video_720_quanto_bf16_int8.safetensors"),
        ("my_model.safetensors", "bf16", "my_model_quanto_int8.safetensors"),
        ("https://h/ns/r/resolve/main/sub/ft_bf16.safetensors", "bf16", "ft_quanto_bf16_int8.safetensors"),
    ],
)
def test_quantized_filename(name: str, dtype: str, expected: str) -> None:
    assert quantized_filename(name, dtype) == expected


def test_quantized_name_is_picked_back_by_the_rule() -> None:
    source = "ft_fp16.safetensors"
    for dtype in ("bf16", "fp16"):
        made = quantized_filename(source, dtype)
        assert select_variant([source, made], "int8", dtype) == made


@pytest.mark.parametrize(
    ("name", "dtype", "quantization"),
    [
        ("a_mbf16.safetensors", "bf16", None),
        ("a_quanto_mfp16_int8.safetensors", "fp16", "int8"),
        ("a_quanto_int8.safetensors", None, "int8"),
        ("a_BF16_FP8.safetensors", "bf16", "fp8"),
        ("plain.safetensors", None, None),
    ],
)
def test_parse_variant_name(name: str, dtype: str | None, quantization: str | None) -> None:
    info = parse_variant_name(name)
    assert (info.dtype, info.quantization) == (dtype, quantization)
