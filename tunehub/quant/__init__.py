"""Streaming int8 quantization in optimum-quanto's format (what WanGP reads), and loading it back.

Modules: ``layers`` (which layers, per key layout), ``format`` (safetensors header,
quantization map), ``stream`` (the file-to-file quantizer), ``load`` (int8 file ->
quanto modules without 16-bit copies), ``flow`` (``tunehub quantize ID`` and
auto_quantize). Only ``stream``, ``load`` and ``flow`` import torch, and only when called.
"""
