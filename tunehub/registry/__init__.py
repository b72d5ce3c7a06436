"""Definitions: parse, validate, merge, resolve references, pick the weight file (WanGP's rule)."""

from tunehub.registry.core import DefinitionFolder, Registry, builtin_definitions_dir
from tunehub.registry.model import Definition, FileChoice, Origin, Problem, Resolution
from tunehub.registry.naming import VariantInfo, parse_variant_name, quantized_filename
from tunehub.registry.select import select_variant

__all__ = [
    "Definition",
    "DefinitionFolder",
    "FileChoice",
    "Origin",
    "Problem",
    "Registry",
    "Resolution",
    "VariantInfo",
    "builtin_definitions_dir",
    "parse_variant_name",
    "quantized_filename",
    "select_variant",
]
