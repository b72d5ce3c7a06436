"""Settings merge, checks, the WanGP export and output names (no models involved)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tunehub.errors import ConfigError
from tunehub.inference.settings import (
    effective,
    export_settings,
    merge_settings,
    parse_resolution,
    reserve_output,
    write_settings,
)


def test_command_line_values_win_over_the_definition() -> None:
    definition = {"prompt": "from the definition", "num_inference_steps": 30, "custom_key": [1, 2]}
    merged = merge_settings(definition, {"prompt": "from the command line", "num_inference_steps": None}, "wan")
    assert merged["prompt"] == "from the command line"
    assert merged["num_inference_steps"] == 30, "None means: not given"
    assert merged["custom_key"] == [1, 2], "unknown keys pass through"
    assert merged["resolution"] == "832x480", "program default when nobody says"


def test_hunyuan_defaults_are_its_own() -> None:
    merged = merge_settings({}, {}, "hunyuan")
    assert merged["guidance_scale"] == 1.0 and merged["embedded_guidance_scale"] == 6.0


def test_resolution_is_width_by_height() -> None:
    assert parse_resolution("832x480") == (832, 480)
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        parse_resolution("832 by 480")


def test_bad_values_name_the_definition_and_key() -> None:
    with pytest.raises(ConfigError, match="definition 'x'.*'num_inference_steps'"):
        effective(merge_settings({"num_inference_steps": "many"}, {}, "wan"), "definition 'x'")
    with pytest.raises(ConfigError, match="'video_length' must be 4k\\+1"):
        effective(merge_settings({"video_length": 80}, {}, "wan"), "definition 'x'")
    with pytest.raises(ConfigError, match="multiples of 16"):
        effective(merge_settings({"resolution": "830x480"}, {}, "wan"), "definition 'x'")


def test_random_seed_is_written_back() -> None:
    settings = merge_settings({"seed": -1}, {}, "wan")
    values = effective(settings, "d")
    assert values.seed >= 0 and settings["seed"] == values.seed


def test_export_is_wangp_shaped(tmp_path: Path) -> None:
    exported = export_settings({"prompt": "p", "seed": 3, "model": {"name": "x"}}, "t2v_fast", "https://h/x.safetensors")
    assert exported == {"prompt": "p", "seed": 3, "model_type": "t2v_fast", "model_filename": "https://h/x.safetensors"}
    path = write_settings(tmp_path / "clip.mp4", exported)
    assert path == tmp_path / "clip.json" and json.loads(path.read_text()) == exported


def test_reserved_names_never_collide_across_threads(tmp_path: Path) -> None:
    names: list[Path] = []
    lock = threading.Lock()

    def take() -> None:
        name = reserve_output(tmp_path, "t2v", 5)
        with lock:
            names.append(name)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(names)) == 8 and all(name.suffix == ".mp4" for name in names)


def test_generate_command_does_not_import_torch() -> None:
    code = (
        "import sys; from tunehub.cli.main import build_parser; build_parser(); "
        "import tunehub.inference; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
