"""Loader: an infinite, device-resident batch stream over a :class:`Dataset`.

The whole dataset is copied to the device once, and loaders over the same dataset on the
same device share that copy (the trainer's labelled and x_pd loaders: one copy, not two;
at 64x64 ImageNet that is 63 GB of float32 saved). Each epoch draws one ``randperm`` on the
device; a batch is one ``index_select`` of x and y, and augmentation (random crop from a
reflect-padded image, horizontal flip, Gaussian input noise) is a handful of batched
kernels driven by the loader's own ``torch.Generator``. Nothing loops over samples in
Python and nothing reads a device value on the host, so a step never waits on the loader.
"""
from __future__ import annotations

import math
import numbers
import weakref
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ..validate import as_device
from .base import Dataset

__all__ = ["Loader", "augment_batch"]


# (id of the host tensor, its version, device) -> (weak ref to the host tensor, weak ref to
# its device copy): the copy lives as long as a loader holds it, and is never handed out
# for another tensor (the host ref is checked) or for one written to since (the version).
_COPIES: dict = {}


def device_copy(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """x as contiguous float32 on device, shared with every other caller for the same x
    (unchanged since) and device while one of them still holds it. Treat it as read-only."""
    key = (id(x), x._version, str(device))
    entry = _COPIES.get(key)
    if entry is not None and entry[0]() is x:
        copy = entry[1]()
        if copy is not None:
            return copy
    copy = x.to(device, torch.float32).contiguous()
    for k in [k for k, (src, dst) in _COPIES.items() if src() is None or dst() is None]:
        del _COPIES[k]   # forget dead entries (an id may be reused by a new tensor)
    _COPIES[key] = (weakref.ref(x), weakref.ref(copy))
    return copy


def augment_batch(x: torch.Tensor, *, pad: int = 0, flip: bool = False, noise_sigma: float = 0.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W), a new tensor; x is not modified.

    1. pad > 0: reflect-pad each side by ``pad`` and crop back to H x W at a per-sample
       offset (dy, dx) ~ U{0..2 pad}^2, i.e. out[b, c, i, j] = padded[b, c, i + dy_b, j + dx_b]
       (one gather; content moves by at most ``pad`` pixels per axis).
    2. flip: each sample mirrored along W with probability 1/2.
    3. noise_sigma > 0: out + noise_sigma * N(0, 1) (not clamped, as the published code).
    Random numbers come from ``generator`` (on x's device), in this order.
    """
    b, c, h, w = x.shape
    dev = x.device
    if pad > 0:
        if pad >= min(h, w):
            raise ValueError(f"pad must be < the image size for reflect padding, got pad={pad} "
                             f"for {h}x{w} images")
        hp, wp = h + 2 * pad, w + 2 * pad
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect").reshape(b, c, hp * wp)
        dy = torch.randint(0, 2 * pad + 1, (b, 1, 1), device=dev, generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (b, 1, 1), device=dev, generator=generator)
        rows = torch.arange(h, device=dev).view(1, h, 1) + dy          # (B, H, 1)
        cols = torch.arange(w, device=dev).view(1, 1, w) + dx          # (B, 1, W)
        idx = (rows * wp + cols).reshape(b, 1, h * w).expand(b, c, h * w)
        x = padded.gather(2, idx).reshape(b, c, h, w)
    if flip:
        mirror = torch.rand(b, device=dev, generator=generator) < 0.5
        x = torch.where(mirror.view(b, 1, 1, 1), x.flip(3), x)
    if noise_sigma > 0:
        x = x + noise_sigma * torch.randn(x.shape, device=dev, dtype=x.dtype, generator=generator)
    return x


class Loader:
    """``next(loader) -> (x, y)``: x (B, C, H, W) float32 and y (B,) int64 on ``device``.

    Infinite: ``__iter__`` returns self and ``__next__`` never stops; after the last batch
    of an epoch the next epoch starts with a fresh permutation (shuffle=True) or the same
    order. ``epoch`` counts completed epochs, ``position`` the batches served in the
    current one; ``steps_per_epoch`` = N // B (drop_last) or ceil(N / B).

    augment=True applies :func:`augment_batch` with the dataset's ``pad`` and ``flip``;
    noise_sigma > 0 adds ``noise_sigma * N(0, 1)`` to every batch (the published code: 0.03).
    generator: a ``torch.Generator`` on ``device`` driving shuffling and augmentation;
    None makes one seeded from torch's global RNG (so ``torch.manual_seed`` fixes it).
    ``state_dict`` / ``load_state_dict`` resume the exact batch sequence.
    """

    def __init__(self, ds: Dataset, batch_size: int, *, device="cpu", shuffle: bool = True,
                 augment: bool = False, noise_sigma: float = 0.0, drop_last: bool = True,
                 generator: torch.Generator | None = None):
        if not isinstance(ds, Dataset):
            raise TypeError(f"ds must be an ebjdat.data.Dataset, got {type(ds).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size <= 0:
            raise ValueError(f"batch_size must be an int > 0, got {batch_size!r}")
        if len(ds) == 0:
            raise ValueError("ds is empty")
        if drop_last and batch_size > len(ds):
            raise ValueError(f"batch_size={batch_size} exceeds the {len(ds)} samples of the "
                             f"dataset with drop_last=True (no batch would ever be served)")
        if (isinstance(noise_sigma, bool) or not isinstance(noise_sigma, numbers.Real)
                or not math.isfinite(noise_sigma) or noise_sigma < 0):
            raise ValueError(f"noise_sigma must be a finite number >= 0, got {noise_sigma!r}")
        self.device = as_device(device)
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(int(torch.randint(0, 2**62, ()).item()))
        elif not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        elif as_device(generator.device) != self.device:
            raise ValueError(f"generator is on {generator.device}, expected {self.device}; create "
                             f"it with torch.Generator(device={str(self.device)!r})")
        if augment and ds.pad >= min(ds.x.shape[2], ds.x.shape[3]):
            raise ValueError(f"ds.pad={ds.pad} must be < the image size for reflect padding")

        self.dataset = ds
        self.batch_size = int(batch_size)
        self.shuffle, self.augment, self.drop_last = bool(shuffle), bool(augment), bool(drop_last)
        self.noise_sigma = float(noise_sigma)
        self.generator = generator
        # The one host -> device copy (shared by loaders of ds); every batch is gathered from it.
        self.x = device_copy(ds.x, self.device)
        self.y = ds.y.to(self.device)
        self.n = len(ds)
        self.steps_per_epoch = (self.n // self.batch_size if self.drop_last
                                else -(-self.n // self.batch_size))
        self.epoch = 0
        self.position = 0
        self._perm: torch.Tensor | None = None  # drawn lazily at an epoch's first batch

    # ---- the stream --------------------------------------------------------------------
    def __iter__(self) -> Loader:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._perm is None:
            self._perm = (torch.randperm(self.n, device=self.device, generator=self.generator)
                          if self.shuffle else torch.arange(self.n, device=self.device))
        start = self.position * self.batch_size
        idx = self._perm[start:start + self.batch_size]
        self.position += 1
        if self.position == self.steps_per_epoch:
            self.epoch, self.position, self._perm = self.epoch + 1, 0, None
        x = self.x.index_select(0, idx)
        if self.augment or self.noise_sigma > 0:
            ds = self.dataset
            x = augment_batch(x, pad=ds.pad if self.augment else 0,
                              flip=ds.flip and self.augment, noise_sigma=self.noise_sigma,
                              generator=self.generator)
        return x, self.y.index_select(0, idx)

    def epoch_batches(self, batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Exactly one pass in dataset order, the last batch possibly short, without
        augmentation or noise (for evaluation). Leaves the stream and generator untouched.
        The batches are views of the loader's device copy: clone before writing in place."""
        bs = self.batch_size if batch_size is None else batch_size
        if isinstance(bs, bool) or not isinstance(bs, numbers.Integral) or bs <= 0:
            raise ValueError(f"batch_size must be an int > 0, got {batch_size!r}")
        for s in range(0, self.n, bs):
            yield self.x[s:s + bs], self.y[s:s + bs]

    # ---- state -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{"epoch", "position", "n", "batch_size"}`` ints, ``"perm"`` (the current
        epoch's order, int64, empty before it is drawn) and ``"generator"`` (its state, a
        uint8 CPU tensor): loadable with ``torch.load(..., weights_only=True)``."""
        perm = self._perm if self._perm is not None else torch.empty(0, dtype=torch.int64)
        return {"epoch": self.epoch, "position": self.position, "n": self.n,
                "batch_size": self.batch_size, "perm": perm.detach().cpu(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, sd: dict) -> None:
        """Restores a :meth:`state_dict`; the next batch is the one the saved loader would
        have served. The dataset size and batch size must match."""
        keys = {"epoch", "position", "n", "batch_size", "perm", "generator"}
        if not isinstance(sd, dict) or not keys <= sd.keys():
            raise ValueError(f"sd must be a dict from Loader.state_dict() (keys {sorted(keys)})")
        if (sd["n"], sd["batch_size"]) != (self.n, self.batch_size):
            raise ValueError(f"state dict is for (n, batch_size) = {(sd['n'], sd['batch_size'])}, "
                             f"this loader has {(self.n, self.batch_size)}")
        perm = sd["perm"]
        if perm.numel() not in (0, self.n):
            raise ValueError(f"state dict perm has {perm.numel()} entries, expected 0 or {self.n}")
        if not 0 <= int(sd["position"]) < self.steps_per_epoch:
            raise ValueError(f"state dict position {sd['position']} is outside "
                             f"[0, {self.steps_per_epoch})")
        self.generator.set_state(sd["generator"])
        self.epoch, self.position = int(sd["epoch"]), int(sd["position"])
        self._perm = perm.to(self.device, torch.int64) if perm.numel() else None
