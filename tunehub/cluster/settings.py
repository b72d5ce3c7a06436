"""``[cluster]`` in tunehub.toml, checked. Standard library only: the daemon reads it without Ray.

```toml
[cluster]
engine = "ray"                    # the only engine
address = "ray://head:10001"      # or "auto" (a node of the cluster), or "HOST:6379"
gpus_per_job = 1                  # num_gpus per job; 0 runs on CPU workers
resource = ""                     # a custom Ray resource to ask for instead of GPUs ("" = GPUs)
endpoint = "http://mirror:8080"   # the Hub the workers pull from (default: this home's endpoint)
worker_home = "~/.tunehub-worker" # per-node home: that node's weights cache ($TUNEHUB_WORKER_HOME wins)
runtime_env = { pip = ["tunehub==0.1.0"] }   # how tunehub gets onto the workers (Ray's runtime_env)
max_attempts = 3                  # a job whose node dies is retried on another, this many times in all
max_jobs = 8                      # jobs handed to Ray at once (the rest wait in the journal)
namespace = "tunehub"             # Ray namespace of the job actors
```
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunehub.config import Config
from tunehub.errors import ConfigError

__all__ = ["ClusterSettings", "cluster_settings", "ENGINES", "home_key", "actor_name"]

ENGINES = ("ray",)
_KEYS = {
    "engine", "address", "gpus_per_job", "resource", "endpoint", "worker_home", "runtime_env",
    "max_attempts", "max_jobs", "namespace",
}


@dataclass(frozen=True)
class ClusterSettings:
    engine: str = "ray"
    address: str = "auto"
    gpus_per_job: float = 1.0
    resource: str = ""
    endpoint: str = ""
    worker_home: str = "~/.tunehub-worker"
    runtime_env: dict[str, Any] = field(default_factory=dict)
    max_attempts: int = 3
    max_jobs: int = 8
    namespace: str = "tunehub"

    def actor_resources(self) -> dict[str, Any]:
        """The Ray options that reserve one job's accelerator: num_gpus, or the custom resource."""
        amount = self.gpus_per_job
        if self.resource:
            return {"num_cpus": 0, "num_gpus": 0, "resources": {self.resource: amount or 1.0}}
        if amount > 0:
            return {"num_cpus": 0, "num_gpus": amount}
        return {"num_cpus": 1, "num_gpus": 0}  # CPU-only clusters: one core per job

    def describe_request(self) -> str:
        if self.resource:
            return f"{self.gpus_per_job or 1:g} {self.resource}"
        if self.gpus_per_job > 0:
            return f"{self.gpus_per_job:g} GPU"
        return "1 CPU"


def _where(cfg: Config, key: str) -> str:
    file = cfg.config_file or (cfg.home / "tunehub.toml")
    return f"{file}: [cluster] {key}"


def cluster_settings(cfg: Config) -> ClusterSettings | None:
    """The checked ``[cluster]`` table, or None when there is none (generate jobs run here)."""
    raw = cfg.cluster
    if not raw:
        return None
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(f"{_where(cfg, unknown[0])}: unknown key; the keys are {', '.join(sorted(_KEYS))}")
    engine = raw.get("engine", "ray")
    if engine not in ENGINES:
        raise ConfigError(f"{_where(cfg, 'engine')} must be one of {', '.join(ENGINES)}; got {engine!r}")
    values: dict[str, Any] = {"engine": engine}
    for key in ("address", "resource", "endpoint", "worker_home", "namespace"):
        if key in raw:
            if not isinstance(raw[key], str):
                raise ConfigError(f"{_where(cfg, key)} must be a string, got {raw[key]!r}")
            values[key] = raw[key].strip()
    if "address" in values and not values["address"]:
        raise ConfigError(f"{_where(cfg, 'address')} must not be empty: \"auto\" or \"ray://HEAD:10001\" or \"HEAD:6379\"")
    if "gpus_per_job" in raw:
        value = raw["gpus_per_job"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{_where(cfg, 'gpus_per_job')} must be a number of at least 0 (0 = CPU workers), got {value!r}")
        values["gpus_per_job"] = float(value)
    for key in ("max_attempts", "max_jobs"):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{_where(cfg, key)} must be a whole number of at least 1, got {value!r}")
            values[key] = value
    if "runtime_env" in raw:
        if not isinstance(raw["runtime_env"], dict):
            raise ConfigError(f"{_where(cfg, 'runtime_env')} must be a table (Ray's runtime_env), got {raw['runtime_env']!r}")
        values["runtime_env"] = dict(raw["runtime_env"])
    if values.get("endpoint"):
        values["endpoint"] = values["endpoint"].rstrip("/")
    return ClusterSettings(**values)


def home_key(home: Path) -> str:
    """A short id of the submitting home (host + path): actor names of two homes never collide."""
    return hashlib.sha1(f"{socket.gethostname()}:{home}".encode()).hexdigest()[:10]


def actor_name(home: Path, job_id: int, attempt: int) -> str:
    """The Ray name of one job attempt: the journal's job id and attempt find it again after a restart."""
    return f"tunehub-{home_key(home)}-job{job_id}-a{attempt}"
