"""``GET /metrics``: the server's counters in Prometheus' text format (version 0.0.4).

Wraps the ASGI app: counts requests and the body bytes of every answer, split into
``kind="file"`` (resolve URLs) and ``kind="api"``; with a mirror, also hits, misses,
bytes fetched from the upstream, the hit ratio and the transfers in flight. Totals only:
no repo names, users or paths (private repo names must not leak to a scraper).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from tunehub.hub.server.mirror import Mirror

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsApp:
    def __init__(self, app: ASGIApp, mirror: Mirror | None = None) -> None:
        self.app = app
        self.mirror = mirror
        self.requests: dict[tuple[str, str], int] = {}  # (kind, status class) -> count
        self.bytes_served: dict[str, int] = {"file": 0, "api": 0}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path == "/metrics" and scope.get("method") in ("GET", "HEAD"):
            await self.answer(scope, send)
            return
        kind = "file" if "/resolve/" in path else "api"
        status = {"code": 0}

        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "http.response.body":
                self.bytes_served[kind] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            key = (kind, f"{status['code'] // 100}xx" if status["code"] else "none")
            self.requests[key] = self.requests.get(key, 0) + 1

    def render(self) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                shown = int(value) if float(value).is_integer() else round(value, 6)
                lines.append(f"{name}{labels} {shown}")

        metric(
            "tunehub_hub_requests_total",
            "counter",
            "HTTP requests answered, by kind (file = resolve URLs) and status class.",
            [(f'{{kind="{k}",code="{c}"}}', n) for (k, c), n in sorted(self.requests.items())],
        )
        metric(
            "tunehub_hub_bytes_served_total",
            "counter",
            "Body bytes sent to clients, by kind.",
            [(f'{{kind="{k}"}}', n) for k, n in sorted(self.bytes_served.items())],
        )
        mirror = self.mirror
        if mirror is not None:
            counters = mirror.counters
            reads = counters.hits + counters.misses
            metric("tunehub_mirror_hits_total", "counter", "File reads answered from the local cache.", [("", counters.hits)])
            metric("tunehub_mirror_misses_total", "counter", "File reads that needed an upstream transfer (started or joined).", [("", counters.misses)])
            metric("tunehub_mirror_hit_ratio", "gauge", "hits / (hits + misses) since start.", [("", counters.hits / reads if reads else 0.0)])
            metric("tunehub_mirror_upstream_bytes_total", "counter", "Bytes received from the upstream for files.", [("", counters.upstream_bytes)])
            metric("tunehub_mirror_upstream_fetches_total", "counter", "File transfers started from the upstream.", [("", counters.upstream_fetches)])
            metric("tunehub_mirror_upstream_fetch_failures_total", "counter", "File transfers that failed (cut, unreachable, wrong bytes).", [("", counters.upstream_fetch_failures)])
            metric("tunehub_mirror_verify_failures_total", "counter", "Files whose upstream bytes did not match the listed hash.", [("", counters.verify_failures)])
            metric("tunehub_mirror_metadata_checks_total", "counter", "Revision look-ups sent to the upstream.", [("", counters.metadata_checks)])
            metric("tunehub_mirror_inflight_fetches", "gauge", "Upstream file transfers in progress.", [("", mirror.inflight)])
            metric("tunehub_mirror_upstream_up", "gauge", "1 if the upstream answered last time, else 0.", [("", 1 if mirror.upstream_up else 0)])
        return "\n".join(lines) + "\n"

    async def answer(self, scope: Scope, send: Send) -> None:
        body = self.render().encode()
        headers = [(b"content-type", CONTENT_TYPE.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})


def parse_metrics(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, for tests and benchmarks reading another server's /metrics."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values
