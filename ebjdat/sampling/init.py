"""Initial-sample distributions for SGLD chains beyond U(lo, hi).

ClassGaussianInit is the per-class Gaussian of JEM++ and SADA-JEM: a mixture, with
uniform class weights, of ``N(mu_k, Sigma_k + jitter * I)`` fitted to the data's
classes, clamped to the data range. Use it as a ReplayBuffer ``init``.

Three forms of the class covariance (``fit(..., covariance=...)``):
  "full"      Sigma_k itself, as its Cholesky factor (K, D, D): the published code's.
  "lowrank"   its top-r principal directions plus the rest of each pixel's variance on
              the diagonal: ``F_k F_k^T + diag(s_k^2)``, F (K, D, r), s (K, D); the
              variance of every pixel is kept exactly, the correlations along r directions.
  "diagonal"  each pixel's variance alone: ``diag(s_k^2)``.
"auto" (the default) is "full" when D <= FULL_MAX_DIM and the K factors hold at most
FULL_MAX_ELEMS floats, else "lowrank" of rank DEFAULT_RANK. Why: the full factors take
K D^2 floats and their fit K D^3 / 3 flops, which at 32x32x3 (D = 3072) is 0.35 GiB for
CIFAR-10 and 3.5 GiB for CIFAR-100 (the published code's own fits, which stay full and
bit-identical), but at 64x64x3 (D = 12,288) 0.56 GiB per class: 112 GiB for
Tiny-ImageNet's 200 classes, 563 GiB for ImageNet's 1000 (and 35 GiB for ImageNet-32).
Nor do the data support a full matrix there: a class of N_k images has a sample
covariance of rank at most N_k - 1 (500 per Tiny-ImageNet class against D = 12,288), so
beyond its leading directions it is the jitter alone. Rank 32 at 64x64 costs K D 34 floats
(0.31 GiB for 200 classes), and sampling reads n D r floats instead of K n D^2.
"""
from __future__ import annotations

import math
import numbers

import torch

from .. import validate

__all__ = ["COVARIANCES", "ClassGaussianInit", "DEFAULT_RANK", "FULL_MAX_DIM", "FULL_MAX_ELEMS"]

# Elements of the (K, m, D) / (m, D, r) intermediates allowed per chunk (128 MiB fp32).
_CHUNK_ELEMS = 1 << 25
COVARIANCES = ("auto", "full", "lowrank", "diagonal")
FULL_MAX_DIM = 4096          # 64x64 grey, 32x32x3 with room; not 64x64x3 (module docstring)
FULL_MAX_ELEMS = 1 << 30     # K D^2 <= 2^30: the full factors take at most 4 GiB (CIFAR-100: 3.5)
DEFAULT_RANK = 32


def choose_covariance(dim: int, n_classes: int) -> str:
    """What covariance="auto" fits for D = dim and K = n_classes (module docstring)."""
    return "full" if dim <= FULL_MAX_DIM and n_classes * dim * dim <= FULL_MAX_ELEMS else "lowrank"


class ClassGaussianInit:
    """``x = clamp(mu_y + e_y, lo, hi)`` with ``e_y ~ N(0, Sigma_y + jitter I)`` in one of three forms:

    full:      mean (K, D), chol (K, D, D) lower-triangular, ``L_y L_y^T = Sigma_y + jitter I``;
               ``e = L_y z``, z ~ N(0, I_D).
    lowrank:   mean (K, D), factor (K, D, r), std (K, D); ``e = F_y w + std_y * z``,
               z ~ N(0, I_D) then w ~ N(0, I_r): covariance ``F_y F_y^T + diag(std_y^2)``.
    diagonal:  mean (K, D), std (K, D); ``e = std_y * z``.

    D = prod(sample_shape); all float32 on one device. Construct with ``chol`` (full) or
    ``std`` (diagonal; with ``factor``: low-rank), or fit to data with :meth:`fit`.
    Calling ``init(n, y=None)`` returns (n, *sample_shape) float32 on the device, for
    classes ``y`` ((n,) integers in [0, K)) or, when y is None, classes drawn uniformly
    per row (the published code's ``init_random``). ``generator`` (a torch.Generator on the
    device) drives the class, z and w draws.

    Cost of the full form: on the CPU rows are grouped by class, ``n D^2`` multiply-adds.
    On a GPU grouping would need the class counts on the host (a sync), so every row is
    multiplied by all K factors in one batched matmul and its own class's product is
    gathered: ``K n D^2`` (for CIFAR-10 and n = 64, 6e9 multiply-adds, well under a
    millisecond), chunked so the (K, m, D) intermediate stays under 128 MiB. The low-rank
    form gathers each row's own factor (``n D r`` floats read, chunked the same way) on
    every device; the diagonal form is elementwise.
    """

    def __init__(self, mean: torch.Tensor, chol: torch.Tensor | None = None, sample_shape=None, *,
                 factor: torch.Tensor | None = None, std: torch.Tensor | None = None,
                 bounds: tuple[float, float] = (-1.0, 1.0), generator: torch.Generator | None = None):
        if not isinstance(mean, torch.Tensor) or mean.dim() != 2 or not mean.is_floating_point():
            raise ValueError(f"mean must be a (K, D) float tensor, got "
                             f"{tuple(mean.shape) if isinstance(mean, torch.Tensor) else type(mean).__name__}")
        K, D = mean.shape
        if chol is not None:
            if factor is not None or std is not None:
                raise ValueError("give chol (a full covariance) or std (diagonal; with factor: low-rank), not both")
            _check_param("chol", chol, (K, D, D), mean)
        elif std is None:
            raise ValueError("give chol (K, D, D) for a full covariance, or std (K, D) for a diagonal one "
                             "(with factor (K, D, r): low-rank)")
        else:
            _check_param("std", std, (K, D), mean)
            if factor is not None:
                _check_param("factor", factor, (K, D, None), mean)
        if sample_shape is None:
            raise ValueError(f"sample_shape is required: the shape of one sample, D = {D} elements")
        if isinstance(sample_shape, numbers.Integral) and not isinstance(sample_shape, bool):
            sample_shape = (sample_shape,)
        self.sample_shape = tuple(validate.integer(f"sample_shape[{i}]", s) for i, s in enumerate(sample_shape))
        if math.prod(self.sample_shape) != D:
            raise ValueError(f"sample_shape {self.sample_shape} has {math.prod(self.sample_shape)} "
                             f"elements, but mean has D = {D}")
        self.bounds = validate.bounds(bounds)
        dev = validate.as_device(mean.device)
        as32 = lambda t: None if t is None else t.detach().to(dev, torch.float32).contiguous()  # noqa: E731
        self.mean = as32(mean)
        self._chol, self.factor, self.std = as32(chol), as32(factor), as32(std)
        self.generator = validate.torch_generator(generator, dev)

    @classmethod
    def fit(cls, x: torch.Tensor, y: torch.Tensor, n_classes: int, *,
            bounds: tuple[float, float] = (-1.0, 1.0), jitter: float = 1e-4, device=None,
            generator: torch.Generator | None = None, covariance: str = "auto",
            rank: int | None = None) -> "ClassGaussianInit":
        """Fits each class's mean and covariance to data; stores them on ``device`` (x's by default).

        x: (N, *shape) float; y: (N,) integer classes in [0, n_classes). For class k with
        rows X_k (N_k >= 2 of them, flattened to D): ``mu_k = mean(X_k)``,
        ``Sigma_k = (X_k - mu_k)^T (X_k - mu_k) / N_k`` (the maximum-likelihood estimate,
        as the published code's statistics script), in float64, stored in float32. Not a hot
        path: it syncs.

        covariance: "full" (``L_k = cholesky(Sigma_k + jitter I)``, computed on x's
        device), "lowrank" (F_k: the top ``rank`` eigenvectors of Sigma_k scaled by the
        square roots of their eigenvalues, from the N_k x N_k Gram matrix when N_k <= D;
        ``std_k = sqrt(diag(Sigma_k) - rowsum(F_k^2) + jitter)``, so every pixel keeps its
        variance), "diagonal" (``std_k = sqrt(diag(Sigma_k) + jitter)``) or "auto"
        (:func:`choose_covariance`: full up to FULL_MAX_DIM, else lowrank). The low-rank
        and diagonal fits run on ``device``, one class at a time. rank: the low-rank
        form's r (default DEFAULT_RANK, at most D); a class with fewer samples than r has
        zero columns beyond its own rank.
        """
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
            raise ValueError("x must be a float tensor of shape (N, *sample_shape)")
        K = validate.integer("n_classes", n_classes)
        N, shape = x.shape[0], tuple(x.shape[1:])
        # Labels are checked on the CPU (values included; fitting may sync), used on x's device.
        y = validate.labels(y.cpu() if isinstance(y, torch.Tensor) else y, N, K, torch.device("cpu")).to(x.device)
        if isinstance(jitter, bool) or not isinstance(jitter, numbers.Real) \
                or not math.isfinite(jitter) or jitter < 0:
            raise ValueError(f"jitter must be a finite real >= 0, got {jitter!r}")
        form = _check_form(covariance, rank, math.prod(shape), K)
        counts = torch.bincount(y, minlength=K).tolist()
        few = [(k, c) for k, c in enumerate(counts) if c < 2]
        if few:
            raise ValueError(f"every class needs at least 2 samples to fit a covariance; "
                             f"(class, count): {few[:10]}")
        dev = validate.as_device(device if device is not None else x.device)
        xf = x.detach().reshape(N, -1)
        if form != "full":
            mean, factor, std = _fit_factored(xf, y, counts, form, rank or DEFAULT_RANK, jitter, dev)
            return cls(mean, None, shape, factor=factor, std=std, bounds=bounds, generator=generator)
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

    @property
    def covariance(self) -> str:
        """"full", "lowrank" or "diagonal"."""
        return "full" if self._chol is not None else "lowrank" if self.factor is not None else "diagonal"

    @property
    def rank(self) -> int | None:
        """r of the low-rank form; None for the others."""
        return None if self.factor is None else self.factor.shape[2]

    @property
    def chol(self) -> torch.Tensor:
        """(K, D, D) Cholesky factors of the full form."""
        if self._chol is None:
            raise AttributeError(f"chol: this ClassGaussianInit has a {self.covariance} covariance (D = {self.dim}); "
                                 f"only covariance='full' has Cholesky factors (see mean, factor, std)")
        return self._chol

    def __repr__(self) -> str:
        rank = f", rank={self.rank}" if self.factor is not None else ""
        return (f"ClassGaussianInit(n_classes={self.n_classes}, sample_shape={self.sample_shape}, "
                f"covariance={self.covariance!r}{rank}, bounds={self.bounds}, device={self.device})")

    # ---- sampling ----------------------------------------------------------------------
    def __call__(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """n samples (n, *sample_shape) float32: ``clamp(mu_y + e_y, lo, hi)``, no host sync on a
        GPU. float32 under autocast too (a bf16 training step draws its fresh chains here):
        the chains are stored in float32, and a bf16 factor product would round them."""
        with torch.autocast(self.device.type, enabled=False):
            return self._draw(n, y)

    def _draw(self, n: int, y: torch.Tensor | None) -> torch.Tensor:
        n = validate.integer("n", n, minimum=0)
        dev = self.device
        if y is None:
            y = torch.randint(0, self.n_classes, (n,), generator=self.generator, device=dev)
        else:
            y = validate.labels(y, n, self.n_classes, dev)
        z = torch.randn(n, self.dim, generator=self.generator, device=dev, dtype=torch.float32)
        if self._chol is not None:
            out = self._transform(z, y)
        else:
            out = z.mul_(self.std.index_select(0, y))
            if self.factor is not None:
                w = torch.randn(n, self.rank, generator=self.generator, device=dev, dtype=torch.float32)
                out.add_(self._low_rank(w, y))
        out.add_(self.mean.index_select(0, y))
        return out.clamp_(*self.bounds).view(n, *self.sample_shape)

    def _transform(self, z: torch.Tensor, y: torch.Tensor, grouped: bool | None = None) -> torch.Tensor:
        """Full form: (n, D) z, (n,) classes -> (n, D) rows ``L_{y_i} z_i`` (as ``z_i^T L_{y_i}^T``).

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

    def _low_rank(self, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Low-rank form: (n, r) w, (n,) classes -> (n, D) rows ``F_{y_i} w_i``: each row's
        own factor gathered (m, D, r) and applied in one batched matmul per chunk."""
        D, r, n = self.dim, self.rank, w.shape[0]
        out = torch.empty(n, D, dtype=torch.float32, device=w.device)
        step = max(1, _CHUNK_ELEMS // (D * r))
        for s in range(0, n, step):  # the chunking depends on n only, never on the data
            f = self.factor.index_select(0, y[s:s + step])          # (m, D, r)
            out[s:s + step] = torch.bmm(f, w[s:s + step].unsqueeze(2)).squeeze(2)
        return out

    # ---- state -------------------------------------------------------------------------
    def _params(self) -> dict:
        """The form's tensors by state-dict name: mean and chol, mean factor std, or mean std."""
        p = {"mean": self.mean, "chol": self._chol, "factor": self.factor, "std": self.std}
        return {k: v for k, v in p.items() if v is not None}

    def state_dict(self) -> dict:
        """Tensors only (``torch.load(..., weights_only=True)`` reads them): ``mean``, the
        form's own (``chol``; ``factor`` and ``std``; or ``std``), ``sample_shape`` (int64)
        and ``bounds`` (float64). The keys present say the form."""
        return {**self._params(),
                "sample_shape": torch.tensor(self.sample_shape, dtype=torch.int64),
                "bounds": torch.tensor(self.bounds, dtype=torch.float64)}

    def load_state_dict(self, sd: dict) -> None:
        """Copies a :meth:`state_dict` of the same form in; its tensors and sample_shape
        must match in shape."""
        mine = self._params()
        keys = set(mine) | {"sample_shape", "bounds"}
        if not isinstance(sd, dict) or not keys <= sd.keys():
            raise ValueError(f"sd must be a dict from ClassGaussianInit.state_dict() of a {self.covariance} "
                             f"covariance (keys {', '.join(sorted(keys))})")
        if _form_of(sd) != self.covariance:
            raise ValueError(f"state dict holds a {_form_of(sd)} covariance, this init a {self.covariance} one")
        shape = tuple(int(s) for s in sd["sample_shape"].tolist())
        for name, t_mine in mine.items():
            t = sd[name]
            if not isinstance(t, torch.Tensor) or t.shape != t_mine.shape:
                raise ValueError(f"state dict {name} has shape {tuple(getattr(t, 'shape', ()))}, "
                                 f"expected {tuple(t_mine.shape)}")
        if shape != self.sample_shape:
            raise ValueError(f"state dict sample_shape is {shape}, expected {self.sample_shape}")
        bounds = validate.bounds(tuple(sd["bounds"].tolist()))
        for name, t_mine in mine.items():
            t_mine.copy_(sd[name])
        self.bounds = bounds

    @classmethod
    def from_state_dict(cls, sd: dict, *, device=None,
                        generator: torch.Generator | None = None) -> "ClassGaussianInit":
        """A new instance from a :meth:`state_dict` (any form), on ``device`` (the tensors'
        own by default). Other keys (e.g. a checkpoint's "kind") are ignored."""
        if not isinstance(sd, dict) or not {"mean", "sample_shape", "bounds"} <= sd.keys():
            raise ValueError("sd must be a dict from ClassGaussianInit.state_dict() (keys mean, sample_shape, "
                             "bounds and chol, or std (and factor))")
        dev = validate.as_device(device if device is not None else sd["mean"].device)
        move = lambda k: sd[k].to(dev) if k in sd else None  # noqa: E731
        return cls(move("mean"), move("chol"), tuple(sd["sample_shape"].tolist()), factor=move("factor"),
                   std=move("std"), bounds=tuple(sd["bounds"].tolist()), generator=generator)

    def to(self, device, *, generator: torch.Generator | None = None) -> "ClassGaussianInit":
        """Moves the parameters to ``device`` in place (returns self). ``generator`` replaces
        the current one; None keeps it on the same device, else selects the default one."""
        dev = validate.as_device(device)
        if generator is not None or dev != self.device:
            self.generator = validate.torch_generator(generator, dev)
        move = lambda t: None if t is None else t.to(dev)  # noqa: E731
        self.mean, self._chol, self.factor, self.std = (move(t) for t in (self.mean, self._chol, self.factor,
                                                                          self.std))
        return self


# ---- helpers ---------------------------------------------------------------------------
def _check_param(name: str, t, shape: tuple, mean: torch.Tensor) -> None:
    """ValueError unless t is a float tensor of ``shape`` (None: any size >= 1) on mean's device."""
    ok = (isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() == len(shape)
          and all(got == want if want is not None else got >= 1 for got, want in zip(t.shape, shape)))
    if not ok:
        want = tuple("r" if w is None else w for w in shape)
        raise ValueError(f"{name} must be a {want} float tensor, got "
                         f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    if t.device != mean.device:
        raise ValueError(f"{name} is on {t.device} but mean is on {mean.device}")


def _form_of(sd: dict) -> str:
    return "full" if "chol" in sd else "lowrank" if "factor" in sd else "diagonal"


def _check_form(covariance, rank, dim: int, n_classes: int) -> str:
    """The form fit() computes ("full", "lowrank" or "diagonal"), after checking the arguments."""
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
    form = choose_covariance(dim, n_classes) if covariance == "auto" else covariance
    if rank is not None:
        rank = validate.integer("rank", rank)
        if covariance in ("full", "diagonal"):
            raise ValueError(f"rank={rank} applies to covariance='lowrank' (or 'auto'), not {covariance!r}")
        if rank > dim:
            raise ValueError(f"rank={rank} exceeds D = {dim}, the number of elements of a sample")
    return form


def _top_factor(c: torch.Tensor, r: int) -> torch.Tensor:
    """(N, D) centred rows -> (D, r) F with F F^T the top-r eigen-part of Sigma = c^T c / N
    (columns: eigenvectors times the square roots of their eigenvalues; zero columns where
    Sigma has fewer than r nonzero ones). Float64 throughout."""
    N, D = c.shape
    if N <= D:   # Sigma = c^T c / N shares its nonzero eigenvalues with the N x N Gram matrix
        lam, V = torch.linalg.eigh(c @ c.mT / N)                # ascending
        V = V[:, max(0, N - r):].flip(1)                        # top eigenvectors, largest first
        F = c.mT @ V / math.sqrt(N)                             # sqrt(lam_j) u_j with u_j = c^T v_j / sqrt(N lam_j)
    else:
        lam, U = torch.linalg.eigh(c.mT @ c / N)
        top = slice(max(0, D - r), None)
        F = (U[:, top] * lam[top].clamp(min=0).sqrt()).flip(1)
    if F.shape[1] < r:
        F = torch.cat([F, F.new_zeros(D, r - F.shape[1])], 1)
    return F


def _fit_factored(xf: torch.Tensor, y: torch.Tensor, counts: list[int], form: str, rank: int,
                  jitter: float, dev: torch.device):
    """mean (K, D), factor (K, D, r) or None, std (K, D), float32 on dev: the low-rank or
    diagonal fit (ClassGaussianInit.fit), one class at a time in float64 on dev."""
    K, D = len(counts), xf.shape[1]
    mean = torch.empty(K, D, dtype=torch.float32, device=dev)
    std = torch.empty(K, D, dtype=torch.float32, device=dev)
    factor = torch.empty(K, D, rank, dtype=torch.float32, device=dev) if form == "lowrank" else None
    order = torch.argsort(y, stable=True)   # one pass groups every class, not K masks over N rows
    start = 0
    for k, n_k in enumerate(counts):
        xk = xf.index_select(0, order[start:start + n_k]).to(dev, torch.float64)
        start += n_k
        mu = xk.mean(0)
        c = xk - mu
        var = (c * c).mean(0)   # the diagonal of Sigma_k
        if factor is not None:
            F = _top_factor(c, rank)
            var = (var - (F * F).sum(1)).clamp_(min=0)   # what the r directions leave of each pixel's variance
            factor[k] = F.to(torch.float32)
        mean[k] = mu.to(torch.float32)
        std[k] = (var + jitter).sqrt_().to(torch.float32)
    return mean, factor, std
