"""[cluster] settings, the runner choice and the version check: no Ray cluster needed here."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.fixtures.homes import Home
from tunehub.cluster import LocalRunner, RayRunner, generate_runner, job_slots
from tunehub.cluster.settings import actor_name, cluster_settings, home_key
from tunehub.errors import ClusterVersionError, ConfigError


def test_no_cluster_table_means_local_runs_and_no_ray_import(home: Home) -> None:
    code = (
        "import sys\n"
        "from tunehub.config import load_config\n"
        "from tunehub.cluster import generate_runner, job_slots\n"
        "from tunehub.cli.main import main\n"
        f"cfg = load_config({str(home.root)!r})\n"
        "assert generate_runner(cfg).name == 'local' and job_slots(cfg, 1) == 1\n"
        f"assert main(['--home', {str(home.root)!r}, 'list']) == 0\n"
        "assert 'ray' not in sys.modules, 'ray imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=home.env())
    assert result.returncode == 0, result.stderr


def test_cluster_table_is_checked_with_the_file_and_key(home: Home) -> None:
    home.write_config('[cluster]\nengine = "ray"\naddress = "10.0.0.1:6379"\ngpus_per_job = 2\nresource = "a100"\n'
                      'max_attempts = 2\nmax_jobs = 16\nruntime_env = { env_vars = { A = "1" } }\n')  # fmt: skip
    cfg = home.config()
    settings = cluster_settings(cfg)
    assert settings is not None and settings.address == "10.0.0.1:6379" and settings.max_attempts == 2
    assert settings.actor_resources() == {"num_cpus": 0, "num_gpus": 0, "resources": {"a100": 2.0}}
    assert isinstance(generate_runner(cfg), RayRunner) and job_slots(cfg, 1) == 16
    for text, key in (
        ('[cluster]\nengine = "dask"\n', "engine"),
        ('[cluster]\ngpus_per_job = -1\n', "gpus_per_job"),
        ('[cluster]\nmax_attempts = 0\n', "max_attempts"),
        ('[cluster]\nruntime_env = "pip"\n', "runtime_env"),
        ('[cluster]\nadress = "x"\n', "adress"),
    ):
        home.write_config(text)
        with pytest.raises(ConfigError, match=rf"tunehub.toml: \[cluster\] {key}"):
            cluster_settings(home.config())
    home.write_config('[cluster]\ngpus_per_job = 1\n')
    assert cluster_settings(home.config()).actor_resources() == {"num_cpus": 0, "num_gpus": 1.0}
    home.write_config('[cluster]\ngpus_per_job = 0\n')
    assert cluster_settings(home.config()).actor_resources() == {"num_cpus": 1, "num_gpus": 0}
    assert isinstance(generate_runner(home.config()), RayRunner)
    home.write_config("")
    assert isinstance(generate_runner(home.config()), LocalRunner)


def test_actor_names_come_from_the_home_job_and_attempt(home: Home) -> None:
    name = actor_name(home.root, 12, 2)
    assert name == f"tunehub-{home_key(home.root)}-job12-a2"
    assert home_key(home.root) != home_key(home.root / "other")


def test_version_check_names_both_versions() -> None:
    from tunehub.cluster.ray_runner import check_versions

    node = {"node_id": "abcdef123456", "node_ip": "10.0.0.7", "tunehub": "0.0.9", "ray": "2.60.0"}
    with pytest.raises(ClusterVersionError, match=r"node 10\.0\.0\.7 .* runs tunehub 0\.0\.9, this home runs tunehub 0\.1\.0"):
        check_versions([node], local_tunehub="0.1.0", local_ray="2.60.0")
    with pytest.raises(ClusterVersionError, match=r"runs Ray 2\.59\.0, this home runs Ray 2\.60\.0"):
        check_versions([{**node, "tunehub": "0.1.0", "ray": "2.59.0"}], local_tunehub="0.1.0", local_ray="2.60.0")
    check_versions([{**node, "tunehub": "0.1.0"}], local_tunehub="0.1.0", local_ray="2.60.0")
