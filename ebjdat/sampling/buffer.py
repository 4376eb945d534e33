"""ReplayBuffer: persistent SGLD chains (JEM's replay buffer), kept on the device.

The published code keeps its 10,000 samples on the CPU and moves every batch to the GPU and
back (a host synchronisation each iteration). Here the storage is one tensor on the
buffer's device and every per-batch operation (index draw, gather, reinit, scatter) is a
device kernel: no ``.item()``, no host copies, no data-dependent Python control flow.
"""
from __future__ import annotations

import numbers
from typing import Callable

import torch

from .. import validate

__all__ = ["ReplayBuffer"]

Init = Callable[[int, "torch.Tensor | None"], torch.Tensor]


# ---- the buffer ----------------------------------------------------------------------------
class ReplayBuffer:
    """A replay buffer of ``capacity`` samples of shape ``sample_shape`` on ``device``.

    Storage: ``data``, a ``(capacity, *sample_shape)`` tensor of ``dtype``, filled at
    construction by ``init``. With ``n_classes = K`` the rows form K equal partitions:
    row r belongs to class ``r // (capacity // K)`` (the published code's class-block layout).

    ``init`` is ``"uniform"`` (``U(lo, hi)`` elementwise, ``bounds = (lo, hi)``) or a
    callable ``init(n, y) -> (n, *sample_shape)`` on the device, with ``y`` None or an
    (n,) int64 tensor of classes on the device (e.g. :class:`ClassGaussianInit`).

    ``generator`` drives the index draws, the reinit coin flips and the uniform init:
    torch's default generator of the device when None; a ``torch.Generator`` on the
    buffer's device; or an ``ebjdat.ops.PhiloxGenerator`` there, the type the samplers and
    attacks take, so one generator can be handed to all three: the buffer's draws are
    plain torch kernels, so it seeds a ``torch.Generator`` of its own from the Philox
    generator's seed (one host read, at construction; the Philox stream is not advanced).
    A callable init draws from its own generator.
    """

    def __init__(self, capacity: int, sample_shape, *, n_classes: int | None = None,
                 reinit_freq: float = 0.05, init: str | Init = "uniform",
                 bounds: tuple[float, float] = (-1.0, 1.0), device=None,
                 generator=None, dtype: torch.dtype = torch.float32):
        self.capacity = validate.integer("capacity", capacity)
        if isinstance(sample_shape, numbers.Integral) and not isinstance(sample_shape, bool):
            sample_shape = (sample_shape,)
        if not isinstance(sample_shape, (tuple, list, torch.Size)):
            raise TypeError(f"sample_shape must be a tuple of ints, got {sample_shape!r}")
        self.sample_shape = tuple(validate.integer(f"sample_shape[{i}]", s) for i, s in enumerate(sample_shape))
        self.n_classes = None if n_classes is None else validate.integer("n_classes", n_classes)
        if self.n_classes is not None and self.capacity % self.n_classes:
            raise ValueError(f"capacity ({self.capacity}) must be divisible by n_classes ({self.n_classes})")
        self.reinit_freq = self._freq(reinit_freq)
        self.bounds = validate.bounds(bounds)
        if isinstance(init, str) and init != "uniform":
            raise ValueError(f"init must be 'uniform' or a callable (n, y) -> samples, got {init!r}")
        if not isinstance(init, str) and not callable(init):
            raise TypeError(f"init must be 'uniform' or a callable (n, y) -> samples, "
                            f"got {type(init).__name__}")
        self.init = init
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        dev = validate.as_device(device)
        self.generator = validate.torch_generator(generator, dev)
        self.dtype = dtype
        self._dev = dev
        # Construction may synchronise; only sample/update_ are kept free of host syncs.
        y = None
        if self.n_classes is not None:
            y = torch.arange(self.capacity, device=dev) // self.per_class
        self.data = self._fresh(self.capacity, y)

    # ---- properties --------------------------------------------------------------------
    @property
    def per_class(self) -> int:
        """Rows per class partition, ``capacity // n_classes`` (capacity when unconditional)."""
        return self.capacity // (self.n_classes or 1)

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def shape(self) -> torch.Size:
        """``(capacity, *sample_shape)``."""
        return self.data.shape

    def __len__(self) -> int:
        return self.capacity

    def __repr__(self) -> str:
        return (f"ReplayBuffer(capacity={self.capacity}, sample_shape={self.sample_shape}, "
                f"n_classes={self.n_classes}, reinit_freq={self.reinit_freq}, device={self.device})")

    # ---- sampling ----------------------------------------------------------------------
    def sample(self, batch_size: int, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draws ``batch_size = B`` rows, with replacement: ``(x, idx)``.

        idx: (B,) int64 on the device, uniform over ``[0, capacity)``; with ``y`` (needs
        n_classes), ``idx_i = y_i * P + U{0, P-1}``, ``P = capacity // n_classes``: uniform
        inside class y_i's partition. Draws are independent, so any B >= 0 is allowed: B may
        exceed the capacity or a class's P rows (e.g. 64 rows of one class from an ImageNet
        buffer of 10 rows per class), and then rows repeat (see :meth:`update_`). x: (B, *sample_shape), a new tensor holding
        ``data[idx]`` where each row is, independently with probability reinit_freq,
        replaced by a fresh draw of ``init`` (for class buffers, of the row's class
        ``idx_i // P``; the published code draws a random class). Write the evolved samples
        back with ``update_(idx, x)``.
        """
        B = validate.integer("batch_size", batch_size)
        g, dev = self.generator, self._dev
        if y is None:
            idx = torch.randint(0, self.capacity, (B,), generator=g, device=dev)
            rows_y = None if self.n_classes is None else idx // self.per_class
        else:
            if self.n_classes is None:
                raise ValueError("y was given but the buffer has no class partitions (n_classes=None)")
            rows_y = validate.labels(y, B, self.n_classes, dev)
            idx = rows_y * self.per_class + torch.randint(0, self.per_class, (B,), generator=g, device=dev)
        x = self.data.index_select(0, idx)  # a new tensor: the caller may evolve it in place
        if self.reinit_freq > 0:
            # All B fresh rows are drawn and blended in by a mask: one batched op, no
            # data-dependent shapes (the published code does the same with a float mask).
            fresh = self._fresh(B, rows_y)
            coin = torch.rand(B, generator=g, device=dev) < self.reinit_freq
            x = torch.where(coin.view(B, *(1,) * len(self.sample_shape)), fresh, x)
        return x, idx

    def update_(self, idx: torch.Tensor, x: torch.Tensor) -> "ReplayBuffer":
        """Writes ``data[idx_i] = x_i`` (x detached, cast to the buffer's dtype). Returns self.

        idx: (B,) integer tensor on the buffer's device (from :meth:`sample`). x:
        (B, *sample_shape), any float dtype; on another device it is copied over (the
        published code's CPU-resident layout). When idx repeats a row (draws are with
        replacement) the last of its writes wins, on every device: ``data[r]`` becomes x_j for
        the largest j with idx_j = r (torch's ``index_copy_`` alone leaves the winner
        unspecified on CUDA, so every repeat is first given that row's value).
        """
        if not isinstance(idx, torch.Tensor) or idx.dtype == torch.bool or idx.is_floating_point() \
                or idx.is_complex():
            raise TypeError(f"idx must be an integer tensor, got "
                            f"{idx.dtype if isinstance(idx, torch.Tensor) else type(idx).__name__}")
        if idx.dim() != 1:
            raise ValueError(f"idx must have shape (B,), got {tuple(idx.shape)}")
        if idx.device != self._dev:
            raise ValueError(f"idx is on {idx.device}, expected {self._dev} (the buffer's device)")
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a float tensor, got "
                            f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"x must have sample shape {self.sample_shape}, got {tuple(x.shape)}")
        if x.shape[0] != idx.shape[0]:
            raise ValueError(f"idx has {idx.shape[0]} rows but x has {x.shape[0]}")
        idx = idx.long()
        x = x.detach().to(device=self._dev, dtype=self.dtype)
        if idx.numel() > 1:
            # Repeats: each position takes the value of its row's last occurrence, so the
            # duplicates write equal values and which write wins does not matter. Device ops
            # only; idx is clamped for the helper arrays alone, so an out-of-range idx still
            # reaches index_copy_, which raises on the CPU and asserts on the device.
            rows = idx.clamp(0, self.capacity - 1)
            last = torch.full((self.capacity,), -1, dtype=torch.int64, device=self._dev)
            last.scatter_reduce_(0, rows, torch.arange(idx.numel(), device=self._dev), reduce="amax")
            x = x.index_select(0, last.index_select(0, rows))
        self.data.index_copy_(0, idx, x)
        return self

    # ---- state -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{"buffer": data, "capacity", "sample_shape" (list), "n_classes" (0: none),
        "reinit_freq"}``: tensors, ints, floats and lists, so ``torch.load(...,
        weights_only=True)`` reads it. ``buffer`` shares memory with the buffer, as
        ``nn.Module.state_dict`` does."""
        return {"buffer": self.data.detach(), "capacity": self.capacity,
                "sample_shape": list(self.sample_shape), "n_classes": self.n_classes or 0,
                "reinit_freq": self.reinit_freq}

    def load_state_dict(self, sd: dict) -> None:
        """Copies a :meth:`state_dict` in (onto this buffer's device and dtype); the
        capacity, sample shape and class count must match. reinit_freq is restored."""
        if not isinstance(sd, dict) or not {"buffer", "capacity", "sample_shape", "n_classes"} <= sd.keys():
            raise ValueError("sd must be a dict from ReplayBuffer.state_dict() "
                             "(keys buffer, capacity, sample_shape, n_classes, reinit_freq)")
        mine = (self.capacity, list(self.sample_shape), self.n_classes or 0)
        theirs = (sd["capacity"], list(sd["sample_shape"]), sd["n_classes"])
        if mine != theirs:
            raise ValueError(f"state dict has (capacity, sample_shape, n_classes) = {theirs}, "
                             f"this buffer has {mine}")
        buf = sd["buffer"]
        if not isinstance(buf, torch.Tensor) or tuple(buf.shape) != tuple(self.data.shape):
            got = tuple(buf.shape) if isinstance(buf, torch.Tensor) else type(buf).__name__
            raise ValueError(f"state dict buffer has shape {got}, expected {tuple(self.data.shape)}")
        reinit = self._freq(sd.get("reinit_freq", self.reinit_freq))
        self.data.copy_(buf)
        self.reinit_freq = reinit

    def to(self, device, *, generator=None) -> "ReplayBuffer":
        """Moves the storage to ``device`` in place (returns self). ``generator`` replaces
        the buffer's generator (a torch.Generator or a PhiloxGenerator, as in the
        constructor); None keeps it on the same device, else selects the default
        one. A callable init with a ``to`` method (ClassGaussianInit) is moved too."""
        dev = validate.as_device(device)
        if generator is not None or dev != self._dev:
            self.generator = validate.torch_generator(generator, dev)
        self.data = self.data.to(dev)
        self._dev = dev
        if not isinstance(self.init, str) and hasattr(self.init, "to"):
            self.init.to(dev)
        return self

    # ---- helpers -----------------------------------------------------------------------
    @staticmethod
    def _freq(v) -> float:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"reinit_freq must be a real number in [0, 1], got {v!r}")
        return float(v)

    def _fresh(self, n: int, y: torch.Tensor | None) -> torch.Tensor:
        """n fresh initial samples (n, *sample_shape) on the device, in the buffer's dtype."""
        shape = (n, *self.sample_shape)
        if isinstance(self.init, str):  # "uniform"
            out = torch.empty(shape, device=self._dev, dtype=self.dtype)
            return out.uniform_(*self.bounds, generator=self.generator)
        out = self.init(n, y)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"init(n={n}, y) must return a tensor of shape {shape}, got {got}")
        if out.device != self._dev:
            raise ValueError(f"init returned samples on {out.device}, expected {self._dev} "
                             f"(the buffer's device)")
        return out.detach().to(self.dtype)
