"""Initial-sample distributions for SGLD chains beyond U(lo, hi).

ClassGaussianInit is the per-class Gaussian of JEM++ and SADA-JEM: a mixture, with
uniform class weights, of ``N(mu_k, Sigma_k + jitter * I)`` fitted to the data's
classes, clamped to the data range. Use it as a ReplayBuffer ``init``.
"""
from __future__ import annotations

import math
import numbers

import torch

from .. import checks

__all__ = ["ClassGaussianInit"]

# Elements of the (K, m, D) intermediate the device path allows per chunk (128 MiB fp32).
_CHUNK_ELEMS = 1 << 25


class ClassGaussianInit:
    """``x = clamp(mu_y + L_y z, lo, hi)``, ``z ~ N(0, I_D)``, ``L_y L_y^T = Sigma_y + jitter I``.

    mean: (K, D) float32; chol: (K, D, D) float32 lower-triangular Cholesky factors;
    D = prod(sample_shape). Calling ``init(n, y=None)`` returns (n, *sample_shape) float32
    on the device, for classes ``y`` ((n,) integers in [0, K)) or, when y is None, classes
    drawn uniformly per row (the reference's ``init_random``). ``generator`` (a
    torch.Generator on the device) drives the class and z draws.

    Cost: on the CPU rows are grouped by class, ``n D^2`` multiply-adds. On a GPU grouping
    would need the class counts on the host (a sync), so every row is multiplied by all
    K factors in one batched matmul and its own class's product is gathered: ``K n D^2``
    (for CIFAR-10 and n = 64, 6e9 multiply-adds, well under a millisecond), chunked so
    the (K, m, D) intermediate stays under 128 MiB.
    """

    def __init__(self, mean: torch.Tensor, chol: torch.Tensor, sample_shape, *,
                 bounds: tuple[float, float] = (-1.0, 1.0), generator: torch.Generator | None = None):
        if not isinstance(mean, torch.Tensor) or mean.dim() != 2 or not mean.is_floating_point():
            raise ValueError(f"mean must be a (K, D) float tensor, got "
                             f"{tuple(mean.shape) if isinstance(mean, torch.Tensor) else type(mean).__name__}")
        K, D = mean.shape
        if not isinstance(chol, torch.Tensor) or tuple(chol.shape) != (K, D, D) or not chol.is_floating_point():
            raise ValueError(f"chol must be a (K, D, D) = {(K, D, D)} float tensor, got "
                             f"{tuple(chol.shape) if isinstance(chol, torch.Tensor) else type(chol).__name__}")
        if chol.device != mean.device:
            raise ValueError(f"chol is on {chol.device} but mean is on {mean.device}")
        if isinstance(sample_shape, numbers.Integral) and not isinstance(sample_shape, bool):
            sample_shape = (sample_shape,)
        self.sample_shape = tuple(checks.integer(f"sample_shape[{i}]", s) for i, s in enumerate(sample_shape))
        if math.prod(self.sample_shape) != D:
            raise ValueError(f"sample_shape {self.sample_shape} has {math.prod(self.sample_shape)} "
                             f"elements, but mean has D = {D}")
        self.bounds = checks.bounds(bounds)
        dev = checks.as_device(mean.device)
        self.mean = mean.detach().to(dev, torch.float32).contiguous()
        self.chol = chol.detach().to(dev, torch.float32).contiguous()
        self.generator = checks.torch_generator(generator, dev)

    @classmethod
    def fit(cls, x: torch.Tensor, y: torch.Tensor, n_classes: int, *,
            bounds: tuple[float, float] = (-1.0, 1.0), jitter: float = 1e-4, device=None,
            generator: torch.Generator | None = None) -> "ClassGaussianInit":
        """Fits each class's mean and covariance to data; stores them on ``device`` (x's by default).

        x: (N, *shape) float; y: (N,) integer classes in [0, n_classes). For class k with
        rows X_k (N_k >= 2 of them, flattened to D): ``mu_k = mean(X_k)``,
        ``Sigma_k = (X_k - mu_k)^T (X_k - mu_k) / N_k`` (the maximum-likelihood estimate,
        as the reference's statistics script), ``L_k = cholesky(Sigma_k + jitter I)``,
        computed in float64 on x's device, stored in float32. Not a hot path: it syncs.
        """
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
            raise ValueError("x must be a float tensor of shape (N, *sample_shape)")
        K = checks.integer("n_classes", n_classes)
        N, shape = x.shape[0], tuple(x.shape[1:])
        # Labels are checked on the CPU (values included; fitting may sync), used on x's device.
        y = checks.labels(y.cpu() if isinstance(y, torch.Tensor) else y, N, K, torch.device("cpu")).to(x.device)
        if isinstance(jitter, bool) or not isinstance(jitter, numbers.Real) \
                or not math.isfinite(jitter) or jitter < 0:
            raise ValueError(f"jitter must be a finite real >= 0, got {jitter!r}")
        counts = torch.bincount(y, minlength=K).tolist()
        few = [(k, c) for k, c in enumerate(counts) if c < 2]
        if few:
            raise ValueError(f"every class needs at least 2 samples to fit a covariance; "
                             f"(class, count): {few[:10]}")
        dev = checks.as_device(device if device is not None else x.device)
        xf = x.detach().reshape(N, -1)
        D = xf.shape[1]
        mean = torch.empty(K, D, dtype=torch.float32, device=dev)
        chol = torch.empty(K, D, D, dtype=torch.float32, device=dev)
        eye = torch.eye(D, dtype=torch.float64, device=x.device)
        for k in range(K):  # one class at a time bounds the float64 working set (N_k D + D^2)
            xk = xf[y == k].to(torch.float64)
            mu = xk.mean(0)
            c = xk - mu
            L, info = torch.linalg.cholesky_ex(c.mT @ c / xk.shape[0] + jitter * eye)
            if info.item() != 0:
                raise ValueError(f"class {k}: the covariance + jitter * I is not positive definite "
                                 f"(jitter={jitter}); raise jitter")
            mean[k] = mu.to(dev, torch.float32)
            chol[k] = L.to(dev, torch.float32)
        return cls(mean, chol, shape, bounds=bounds, generator=generator)

    # ---- properties --------------------------------------------------------------------
    @property
    def n_classes(self) -> int:
        return self.mean.shape[0]

    @property
    def dim(self) -> int:
        return self.mean.shape[1]

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def __repr__(self) -> str:
        return (f"ClassGaussianInit(n_classes={self.n_classes}, sample_shape={self.sample_shape}, "
                f"bounds={self.bounds}, device={self.device})")

    # ---- sampling ----------------------------------------------------------------------
    def __call__(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """n samples (n, *sample_shape) float32: ``clamp(mu_y + L_y z, lo, hi)``, no host sync on a GPU."""
        n = checks.integer("n", n, minimum=0)
        dev = self.device
        if y is None:
            y = torch.randint(0, self.n_classes, (n,), generator=self.generator, device=dev)
        else:
            y = checks.labels(y, n, self.n_classes, dev)
        z = torch.randn(n, self.dim, generator=self.generator, device=dev, dtype=torch.float32)
        out = self._transform(z, y).add_(self.mean.index_select(0, y))
        return out.clamp_(*self.bounds).view(n, *self.sample_shape)

    def _transform(self, z: torch.Tensor, y: torch.Tensor, grouped: bool | None = None) -> torch.Tensor:
        """(n, D) z, (n,) classes -> (n, D) rows ``L_{y_i} z_i`` (as ``z_i^T L_{y_i}^T``).

        grouped (default: on the CPU) multiplies each class's rows by its own factor, which
        needs data-dependent row counts; otherwise all K products are formed and gathered.
        """
        if grouped is None:
            grouped = z.device.type == "cpu"
        out = torch.empty_like(z)
        if grouped:
            for k in range(self.n_classes):
                rows = (y == k).nonzero().squeeze(1)
                out.index_copy_(0, rows, z.index_select(0, rows) @ self.chol[k].mT)
            return out
        K, D, n = self.n_classes, self.dim, z.shape[0]
        step = max(1, _CHUNK_ELEMS // (K * D))
        for s in range(0, n, step):  # the chunking depends on n only, never on the data
            zc, yc = z[s:s + step], y[s:s + step]
            m = zc.shape[0]
            every = torch.matmul(zc, self.chol.mT)  # (K, m, D): row i of block k is L_k z_i
            pick = yc * m + torch.arange(m, device=z.device)
            out[s:s + m] = every.reshape(K * m, D).index_select(0, pick)
        return out

    # ---- state -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{"mean", "chol", "sample_shape" (int64), "bounds" (float64)}``: tensors only."""
        return {"mean": self.mean, "chol": self.chol,
                "sample_shape": torch.tensor(self.sample_shape, dtype=torch.int64),
                "bounds": torch.tensor(self.bounds, dtype=torch.float64)}

    def load_state_dict(self, sd: dict) -> None:
        """Copies a :meth:`state_dict` in; mean, chol and sample_shape must match in shape."""
        if not isinstance(sd, dict) or not {"mean", "chol", "sample_shape", "bounds"} <= sd.keys():
            raise ValueError("sd must be a dict from ClassGaussianInit.state_dict() "
                             "(keys mean, chol, sample_shape, bounds)")
        shape = tuple(int(s) for s in sd["sample_shape"].tolist())
        for name, mine in (("mean", self.mean), ("chol", self.chol)):
            t = sd[name]
            if not isinstance(t, torch.Tensor) or t.shape != mine.shape:
                raise ValueError(f"state dict {name} has shape {tuple(getattr(t, 'shape', ()))}, "
                                 f"expected {tuple(mine.shape)}")
        if shape != self.sample_shape:
            raise ValueError(f"state dict sample_shape is {shape}, expected {self.sample_shape}")
        bounds = checks.bounds(tuple(sd["bounds"].tolist()))
        self.mean.copy_(sd["mean"])
        self.chol.copy_(sd["chol"])
        self.bounds = bounds

    @classmethod
    def from_state_dict(cls, sd: dict, *, device=None,
                        generator: torch.Generator | None = None) -> "ClassGaussianInit":
        """A new instance from a :meth:`state_dict`, on ``device`` (the tensors' own by default)."""
        dev = checks.as_device(device if device is not None else sd["mean"].device)
        return cls(sd["mean"].to(dev), sd["chol"].to(dev), tuple(sd["sample_shape"].tolist()),
                   bounds=tuple(sd["bounds"].tolist()), generator=generator)

    def to(self, device, *, generator: torch.Generator | None = None) -> "ClassGaussianInit":
        """Moves the parameters to ``device`` in place (returns self). ``generator`` replaces
        the current one; None keeps it on the same device, else selects the default one."""
        dev = checks.as_device(device)
        if generator is not None or dev != self.device:
            self.generator = checks.torch_generator(generator, dev)
        self.mean, self.chol = self.mean.to(dev), self.chol.to(dev)
        return self
