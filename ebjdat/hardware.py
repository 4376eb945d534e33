"""What the device can do fast: bf16 matrix units (the CPU's flags, a GPU's compute capability).

``bf16_units(device) -> (bool, why)``: CPUs with AMX-BF16 or AVX512-BF16 (oneDNN runs bf16
convolutions and matmuls on them), CUDA GPUs of compute capability 8.0 and newer. On the
CPU without such units, bf16 is emulated and slower than fp32.
"""
from __future__ import annotations

import platform
from pathlib import Path

import torch

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def bf16_units(device) -> tuple[bool, str]:
    """(has bf16 matrix units, why): see the module docstring."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return major >= 8, f"compute capability {major}.{minor}"
    if device.type == "cpu":
        have = [f for f in CPU_BF16_FLAGS if f in cpu_flags()]
        return bool(have), ("CPU flags " + ", ".join(have)) if have else "no amx_bf16 or avx512_bf16 CPU flag"
    return False, f"{device.type}: not known to have bf16 units"
