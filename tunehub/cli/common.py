"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from tunehub.config import Config, load_config

if TYPE_CHECKING:
    from tunehub.registry import Registry


def config_from_args(args: argparse.Namespace) -> Config:
    """The effective configuration for the ``--home`` given on the command line."""
    return load_config(getattr(args, "home", None))


def config_and_registry(args: argparse.Namespace) -> tuple[Config, Registry]:
    """The configuration and every definition it loads, for commands that act on one."""
    from tunehub.registry import Registry

    config = config_from_args(args)
    return config, Registry.load(config)


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
