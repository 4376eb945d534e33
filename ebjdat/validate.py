"""Validation of arguments shared across ebjdat's layers (sampling, plots, evaluation): each
raises TypeError or ValueError naming the argument, before anything is done. The fused
ops' own checks live in ebjdat/ops/checks.py."""
from __future__ import annotations

import math
import numbers
import os

import torch

SEED_LIMIT = 2**63       # seeds reach torch.Generator.manual_seed (a signed 64-bit integer)
MEMORY_FACTOR = 16       # float32 copies of a sample a sampler holds: starts, chains, gradients, noise, ...


def integer(name: str, v, *, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return int(v)


def seed(name: str, v) -> int:
    """A seed in [0, 2**63), the range torch's generators take; ValueError naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 0 <= v < SEED_LIMIT:
        raise ValueError(f"{name} {v}: a seed must be an integer >= 0 and < 2**63 (what torch's generators "
                         f"take); pass one in that range")
    return int(v)


def memory_bytes(device: torch.device) -> int:
    """The memory that holds tensors on ``device``: the GPU's total on CUDA, else the
    machine's physical memory."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def item_values(shape: tuple, model: torch.nn.Module | None = None) -> int:
    """The float32 values one sample of ``shape`` holds while a sampler runs on it: its
    image MEMORY_FACTOR times (starts, chains, gradients, noise, copies) and, given the
    ``model``, three times the model's activations of it (kept for the gradient, and the
    gradient's own), measured on one zero image."""
    values = MEMORY_FACTOR * math.prod(shape)
    if model is not None:
        values += 3 * activation_values(model, shape)
    return values


@torch.no_grad()
def activation_values(model: torch.nn.Module, shape: tuple) -> int:
    """The values the leaf modules of ``model`` output for one zero image of ``shape``
    (eval mode for the measurement; the model's mode is restored)."""
    sizes, mode = [], model.training
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.numel() if torch.is_tensor(o) else 0))
             for m in leaves]
    try:
        p = next(model.parameters(), None)
        model.eval()(torch.zeros((1, *shape), device=p.device if p is not None else "cpu"))
    finally:
        for h in hooks:
            h.remove()
        model.train(mode)
    return sum(sizes)


def max_items(values_per_item: int, device: torch.device) -> int:
    """How many items of ``values_per_item`` float32 values fit in ``device``'s memory."""
    return memory_bytes(device) // (4 * values_per_item)


def check_fits(name: str, n: int, values_per_item: int, device: torch.device) -> None:
    """ValueError naming ``name`` when n items of ``values_per_item`` float32 values
    (item_values) cannot fit in ``device``'s memory: refused before anything is allocated,
    rather than killed for memory."""
    limit = max_items(values_per_item, device)
    if n > limit:
        gib = memory_bytes(device) / 2**30
        raise ValueError(f"{name} {n}: that many samples need about {4 * values_per_item * n / 2**30:.0f} GiB, "
                         f"beyond the {gib:.0f} GiB memory of {device}; pass at most {limit}")


def nonfinite(tensors: dict) -> str | None:
    """None when every floating tensor of {name: tensor} is finite, else where they are
    not: "3 of 1024 values of conv1.weight" (the first tensor holding any)."""
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                return f"{bad} of {t.numel()} values of {name}"
    return None


def nonfinite_rows(x: torch.Tensor) -> int:
    """How many rows x[i] (images, chains) of a floating tensor hold a NaN or an inf."""
    if not x.is_floating_point() or not len(x):
        return 0
    return int((~torch.isfinite(x)).flatten(1).any(1).sum())


def bounds(v) -> tuple[float, float]:
    """bounds: a (lo, hi) pair of finite reals with lo < hi."""
    if not isinstance(v, (tuple, list)) or len(v) != 2:
        raise TypeError(f"bounds must be a (lo, hi) pair, got {v!r}")
    for side, b in zip(("bounds[0]", "bounds[1]"), v):
        if isinstance(b, bool) or not isinstance(b, numbers.Real) or not math.isfinite(b):
            raise TypeError(f"{side} must be a finite real number, got {b!r}")
    lo, hi = float(v[0]), float(v[1])
    if lo >= hi:
        raise ValueError(f"bounds must have lo < hi, got lo={lo}, hi={hi}")
    return lo, hi


def as_device(device) -> torch.device:
    """None -> cpu; a bare "cuda" -> the current CUDA device (so comparisons are exact)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def resolve_device(name: str) -> torch.device:
    """"auto" (the GPU when torch sees one, else the CPU), "cpu", "cuda" or "cuda:N" as a
    torch.device; ValueError, phrased for --device, for a name that is no such device or a
    GPU torch cannot see (checked here: torch's own error comes later, and is cryptic)."""
    if not isinstance(name, str):
        raise TypeError(f"device must be a string (auto, cpu, cuda or cuda:N), got {type(name).__name__}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ValueError(f"--device {name}: ebjdat runs on cpu or cuda; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is visible to torch (torch.cuda.is_available() "
                         f"is False); use --device cpu or auto")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise ValueError(f"--device {name}: torch sees {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}; "
                         f"use one of those, cuda or auto")
    return dev


def torch_generator(g, device: torch.device) -> torch.Generator | None:
    """A torch.Generator on ``device`` for torch's random ops (index draws, fresh rows).
    An ``ebjdat.ops.PhiloxGenerator`` (what SGLD, PGD and the ops take) is accepted too: it
    seeds a new torch.Generator on ``device`` from its seed (its own stream is not advanced)."""
    if g is None:
        return None
    from .ops import PhiloxGenerator
    if isinstance(g, PhiloxGenerator):
        if as_device(g.device) != device:
            raise ValueError(f"generator is on {g.device}, expected {device}")
        return torch.Generator(device).manual_seed(g.seed)
    if not isinstance(g, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or an ebjdat.ops.PhiloxGenerator on "
                        f"{device}, got {type(g).__name__}")
    if as_device(g.device) != device:
        raise ValueError(f"generator is on {g.device}, expected {device}; create it with "
                         f"torch.Generator(device={str(device)!r})")
    return g


def labels(y, n: int, n_classes: int, device: torch.device, name: str = "y") -> torch.Tensor:
    """Checks a (n,) integer label tensor on ``device`` with values in [0, n_classes);
    returns it as int64. CUDA values are checked by an asynchronous device assert (no host
    sync; a failure surfaces at a later CUDA call and poisons the context), CPU ones directly."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise TypeError(f"{name} must be an integer tensor (int64), got {y.dtype}")
    if tuple(y.shape) != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(y.shape)}")
    if y.device != device:
        raise ValueError(f"{name} is on {y.device}, expected {device} (the sampler's device)")
    y = y.long()
    class_range(y, n_classes, name)
    return y


def class_range(y: torch.Tensor, n_classes: int, name: str, host: bool | None = None) -> None:
    """Values in [0, n_classes): read on the host for CPU tensors (host=None), else an
    asynchronous device assert (tests force host=False to check that path on the CPU)."""
    if y.device.type == "cpu" if host is None else host:
        bad = (y < 0) | (y >= n_classes)
        if bad.any():
            raise ValueError(f"{name} must lie in [0, {n_classes}), got {y[bad][0].item()}")
    else:
        torch._assert_async(((y >= 0) & (y < n_classes)).all(),
                            f"{name} holds a class outside [0, {n_classes})")
