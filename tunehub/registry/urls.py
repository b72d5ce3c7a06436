"""URLs and paths of definition entries: parse Hub resolve URLs, build them, name the local file.

Pure parsing, no I/O: the vocabulary of the registry, used by hub, quant and the daemon."""

from __future__ import annotations

from dataclasses import dataclass
import posixpath
from urllib.parse import quote, unquote, urlsplit

__all__ = ["base_name", "HubURL", "parse_hub_url", "is_url", "local_name", "hub_resolve_url", "REPO_TYPE_PREFIXES"]

# URL prefix -> huggingface_hub repo_type
REPO_TYPE_PREFIXES = {"datasets": "dataset", "spaces": "space"}


def base_name(source: str) -> str:
    """The last path segment of a URL or a path (WanGP's ``os.path.basename``)."""
    return posixpath.basename(source.replace("\\", "/").split("?", 1)[0])


@dataclass(frozen=True)
class HubURL:
    endpoint: str  # scheme://host[:port][/prefix], no trailing slash
    repo_type: str  # "model", "dataset" or "space"
    repo_id: str  # "ns/name" (or a legacy single name)
    revision: str  # decoded: "refs/pr/1", not "refs%2Fpr%2F1"
    path: str  # decoded path inside the repo

    @property
    def url(self) -> str:
        return hub_resolve_url(self.endpoint, self.repo_id, self.revision, self.path, self.repo_type)


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def parse_hub_url(url: str) -> HubURL | None:
    """Split ``{endpoint}/[datasets/]{repo}/resolve/{rev}/{path}``; None if not of that shape."""
    if not is_url(url):
        return None
    parts = urlsplit(url)
    segments = parts.path.split("/")
    try:
        resolve_at = segments.index("resolve", 1)
    except ValueError:
        return None
    before = [s for s in segments[1:resolve_at]]
    after = segments[resolve_at + 1 :]
    if len(after) < 2 or not after[0] or not all(after[1:]) or not before or not all(before):
        return None
    repo_type = "model"
    type_at = next((i for i, s in enumerate(before) if s in REPO_TYPE_PREFIXES), None)
    if type_at is not None and len(before) - type_at - 1 in (1, 2):
        repo_type = REPO_TYPE_PREFIXES[before[type_at]]
        prefix, repo_parts = before[:type_at], before[type_at + 1 :]
    elif len(before) >= 2:
        prefix, repo_parts = before[:-2], before[-2:]
    else:
        prefix, repo_parts = [], before
    endpoint = f"{parts.scheme}://{parts.netloc}" + "".join(f"/{s}" for s in prefix)
    return HubURL(
        endpoint=endpoint,
        repo_type=repo_type,
        repo_id="/".join(unquote(s) for s in repo_parts),
        revision=unquote(after[0]),
        path="/".join(unquote(s) for s in after[1:]),
    )


def hub_resolve_url(endpoint: str, repo_id: str, revision: str, path: str, repo_type: str = "model") -> str:
    """The download URL of a file, with the revision percent-encoded as the Hub expects."""
    type_prefix = {"dataset": "datasets/", "space": "spaces/"}.get(repo_type, "")
    return f"{endpoint.rstrip('/')}/{type_prefix}{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"


def local_name(source: str) -> str:
    """The file name an entry gets in the weights folder: its base name, flat (as WanGP)."""
    hub = parse_hub_url(source)
    if hub is not None:
        return base_name(hub.path)
    if is_url(source):
        return unquote(base_name(urlsplit(source).path))
    return base_name(source)
