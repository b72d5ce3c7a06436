"""Tests of tunehub.hub."""
