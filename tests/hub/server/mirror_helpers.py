"""A mirror (`tunehub hub serve --upstream`) in front of an upstream `tunehub hub serve`, and the
upstream's own count of file bytes sent, for the mirror tests and benchmark. A proxy between
them that slows bodies or flips a byte: ``tests.hub.test_download_helpers.FaultProxy``."""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

from tests.fixtures.hub_server import HubServer
from tunehub.hub.server.metrics import parse_metrics

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def metrics(server_url: str) -> dict[str, float]:
    with _DIRECT.open(f"{server_url}/metrics", timeout=30) as answer:
        return parse_metrics(answer.read().decode())


def file_bytes_served(server_url: str) -> int:
    """Body bytes of resolve answers a server has sent: the upstream's ground truth."""
    return int(metrics(server_url).get('tunehub_hub_bytes_served_total{kind="file"}', 0))


def start_mirror(
    root: Path, upstream_url: str, token_file: Path | None, *, ttl: str = "600", extra: list[str] | None = None
) -> HubServer:
    args = ["--upstream", upstream_url, "--upstream-ttl", ttl, "--access-log"]
    if token_file is not None:
        args += ["--upstream-token-file", str(token_file)]
    return HubServer(root, extra_args=args + list(extra or [])).start()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
