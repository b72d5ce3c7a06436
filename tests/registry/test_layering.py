"""Layers: registry below hub and quant, hub and quant beside each other, flows above both.

Each package is imported first in a fresh interpreter and must not pull in a layer above it
(nor torch: listing and resolving run without it).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

ABOVE = ("tunehub.flows", "tunehub.daemon", "tunehub.inference", "tunehub.tui", "tunehub.cli")

CASES = {
    "tunehub.registry": ("tunehub.hub", "tunehub.quant", *ABOVE, "torch"),
    "tunehub.hub": ("tunehub.quant", *ABOVE, "torch"),
    "tunehub.hub.pull": ("tunehub.quant", *ABOVE, "torch"),
    "tunehub.hub.publish": ("tunehub.quant", *ABOVE, "torch"),
    "tunehub.quant": ("tunehub.hub", *ABOVE),
    "tunehub.quant.flow": ("tunehub.hub", *ABOVE),
    "tunehub.flows": ("tunehub.daemon", "tunehub.inference", "tunehub.tui", "tunehub.cli", "torch"),
}


@pytest.mark.parametrize("module", sorted(CASES))
def test_package_does_not_import_the_layers_above_it(module: str) -> None:
    forbidden = CASES[module]
    code = (
        "import sys\n"
        f"import {module}\n"
        f"bad = sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in {forbidden!r}))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"import {module} pulled in: {result.stdout.strip()}"


def test_hub_urls_is_the_registry_parser() -> None:
    from tunehub.hub import urls as hub_urls
    from tunehub.registry import urls as registry_urls

    assert hub_urls.parse_hub_url is registry_urls.parse_hub_url
    assert hub_urls.local_name is registry_urls.local_name


SOURCE_RULES = {
    "registry": ("tunehub.hub", "tunehub.quant", *ABOVE),
    "hub": ("tunehub.quant", *ABOVE),
    "quant": ("tunehub.hub", *ABOVE),
}


@pytest.mark.parametrize("package", sorted(SOURCE_RULES))
def test_no_import_of_a_layer_above_even_inside_functions(package: str) -> None:
    """Lazy imports count too: hub.pull used to import quant.flow inside a function."""
    import ast
    from pathlib import Path

    import tunehub

    root = Path(tunehub.__file__).parent / package
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if any(name == f or name.startswith(f + ".") for f in SOURCE_RULES[package]):
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno}: {name}")
    assert not found, found
