"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tunehub.config import Config, load_config


def config_from_args(args: argparse.Namespace) -> Config:
    """The effective configuration for the ``--home`` given on the command line."""
    return load_config(getattr(args, "home", None))


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
