"""The ``cuda`` backend: wraps the pybind11 extension ``ebjdat._C`` (placeholder until built)."""
from __future__ import annotations


def load_error() -> str | None:
    return "ebjdat._C is not built"


def has_device_code() -> bool:
    return False
