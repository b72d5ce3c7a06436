"""Hub resolve URLs: re-exported from :mod:`tunehub.registry.urls`, where URL parsing lives.

Parsing URLs is the registry's vocabulary (the registry, quant and hub all use it), so it
sits below all of them; this module keeps the old import path working.
"""

from tunehub.registry.urls import (
    REPO_TYPE_PREFIXES,
    HubURL,
    base_name,
    hub_resolve_url,
    is_url,
    local_name,
    parse_hub_url,
)

__all__ = ["base_name", "HubURL", "parse_hub_url", "is_url", "local_name", "hub_resolve_url", "REPO_TYPE_PREFIXES"]
