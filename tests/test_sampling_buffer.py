"""ReplayBuffer and ClassGaussianInit: round trips, reinit rates, class partitions,
uniformity, fitted Gaussians, checkpoints, reproducibility, argument errors, and the
absence of host synchronisation (by construction on the CPU, measured on a GPU)."""
import functools
import io
import math

import pytest
import torch

from ebjdat import ops, validate
from ebjdat.sampling.buffer import ReplayBuffer
from ebjdat.sampling.init import ClassGaussianInit

from .conftest import gpu

SHAPE = (3, 4, 4)


def _gen(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def _chi2(counts: torch.Tensor) -> tuple[float, int]:
    """Pearson's statistic against equal cell probabilities, and its degrees of freedom."""
    e = counts.sum().item() / counts.numel()
    return ((counts.double() - e) ** 2 / e).sum().item(), counts.numel() - 1


def _mixture(K=3, n=4000, sep=2.0, scale=0.5, seed=0, device="cpu"):
    """K Gaussian classes in D=4 (samples shaped (2, 2)): known means and covariances."""
    g = _gen(seed)
    D = 4
    means = torch.randn(K, D, generator=g, dtype=torch.float64) * sep
    A = torch.randn(K, D, D, generator=g, dtype=torch.float64) * scale
    covs = A @ A.mT + 0.01 * torch.eye(D, dtype=torch.float64)
    y = torch.arange(K).repeat_interleave(n)
    z = torch.randn(K * n, D, generator=g, dtype=torch.float64)
    x = means[y] + (torch.linalg.cholesky(covs)[y] @ z.unsqueeze(-1)).squeeze(-1)
    return x.float().view(K * n, 2, 2).to(device), y.to(device), means, covs


def _cov(s: torch.Tensor) -> torch.Tensor:
    s = s.double().flatten(1)
    c = s - s.mean(0)
    return c.mT @ c / s.shape[0]


def _assert_moments(mean, cov, true_mean, true_cov, n, k=5.0):
    """Sample mean / covariance of n Gaussian draws within k standard errors of the truth:
    ``sd(mean_i) = sqrt(S_ii / n)``, ``sd(cov_ij) = sqrt((S_ii S_jj + S_ij^2) / n)``."""
    v = torch.diagonal(true_cov)
    assert ((mean - true_mean).abs() <= k * (v / n).sqrt() + 1e-6).all(), (mean, true_mean)
    sd = ((v[:, None] * v[None, :] + true_cov ** 2) / n).sqrt()
    assert ((cov - true_cov).abs() <= k * sd + 1e-6).all(), (cov, true_cov)


# ---- ReplayBuffer ----------------------------------------------------------------------
def test_written_rows_read_back():
    buf = ReplayBuffer(64, SHAPE, reinit_freq=0.0, generator=_gen())
    assert len(buf) == 64 and buf.shape == (64, *SHAPE) and buf.device == torch.device("cpu")
    idx = torch.randperm(64, generator=_gen(1))[:16]
    x = torch.randn(16, *SHAPE, dtype=torch.float64, requires_grad=True)
    assert buf.update_(idx, x) is buf
    assert buf.data.dtype == torch.float32 and torch.equal(buf.data[idx], x.detach().float())
    for _ in range(5):
        xs, i = buf.sample(32)
        assert i.dtype == torch.int64 and i.shape == (32,) and xs.shape == (32, *SHAPE)
        assert torch.equal(xs, buf.data[i])
    xs.add_(1.0)  # sample returns a new tensor: evolving it leaves the buffer alone
    assert torch.equal(buf.data[i] + 1.0, xs)


def test_reinit_one_uniform_gives_fresh_rows_in_bounds():
    buf = ReplayBuffer(50, SHAPE, reinit_freq=1.0, bounds=(-0.5, 0.25), generator=_gen())
    buf.update_(torch.arange(50), torch.full((50, *SHAPE), 7.0))
    x, _ = buf.sample(50)
    assert (x != 7.0).all() and x.min() >= -0.5 and x.max() <= 0.25
    assert (buf.data == 7.0).all()  # sampling never writes back


def test_reinit_one_callable_rows_are_what_init_returned():
    g, calls = _gen(2), []

    def init(n, y):
        out = torch.randn(n, *SHAPE, generator=g)
        calls.append((out.clone(), None if y is None else y.clone()))
        return out

    buf = ReplayBuffer(40, SHAPE, n_classes=4, reinit_freq=1.0, init=init, generator=_gen())
    assert torch.equal(calls[0][1], torch.arange(40) // 10)  # construction: class blocks
    assert torch.equal(buf.data, calls[0][0])
    x, idx = buf.sample(10)
    assert torch.equal(x, calls[-1][0]) and torch.equal(calls[-1][1], idx // 10)  # the row's class
    y = torch.tensor([3, 0, 1, 1, 2], dtype=torch.int32)
    x, idx = buf.sample(5, y)
    assert torch.equal(x, calls[-1][0]) and torch.equal(calls[-1][1], y.long())
    assert calls[-1][1].dtype == torch.int64


def test_reinit_zero_draws_nothing_fresh():
    n_calls = []
    buf = ReplayBuffer(20, (2,), reinit_freq=0.0, generator=_gen(),
                       init=lambda n, y: (n_calls.append(n), torch.zeros(n, 2))[1])
    for _ in range(10):
        buf.sample(7)
    assert n_calls == [20]


def test_reinit_rate_about_five_percent():
    buf = ReplayBuffer(1000, (2,), reinit_freq=0.05, bounds=(0.0, 1.0), generator=_gen())
    buf.update_(torch.arange(1000), torch.full((1000, 2), 5.0))
    fresh, total = 0, 0
    for _ in range(20):
        x, _ = buf.sample(1000)
        new = x != 5.0
        assert torch.equal(new.all(1), new.any(1))  # a row is replaced whole or not at all
        fresh, total = fresh + int(new.all(1).sum()), total + 1000
    sd = math.sqrt(0.05 * 0.95 / total)
    assert abs(fresh / total - 0.05) < 5 * sd


def test_class_partitions():
    K, per = 5, 10
    buf = ReplayBuffer(K * per, (1,), n_classes=K, reinit_freq=0.0, generator=_gen(),
                       init=lambda n, y: y.float().unsqueeze(1))
    assert torch.equal(buf.data[:, 0], (torch.arange(K * per) // per).float())
    g = _gen(3)
    for _ in range(50):
        y = torch.randint(0, K, (8,), generator=g)
        x, idx = buf.sample(8, y)
        assert torch.equal(idx // per, y) and torch.equal(x[:, 0], y.float())
    for k in range(K):  # every row of every partition is reachable
        seen = set()
        for _ in range(20):
            seen |= set(buf.sample(per, torch.full((per,), k))[1].tolist())
        assert seen == set(range(k * per, (k + 1) * per))


def test_indices_uniform():
    buf = ReplayBuffer(50, (1,), reinit_freq=0.0, generator=_gen(4))
    idx = torch.cat([buf.sample(50)[1] for _ in range(200)])
    stat, df = _chi2(torch.bincount(idx, minlength=50))
    assert stat < df + 6 * math.sqrt(2 * df)
    cbuf = ReplayBuffer(50, (1,), n_classes=5, reinit_freq=0.0, generator=_gen(5))
    idx = torch.cat([cbuf.sample(10, torch.full((10,), 2))[1] for _ in range(200)])
    stat, df = _chi2(torch.bincount(idx - 20, minlength=10))
    assert idx.min() >= 20 and idx.max() < 30 and stat < df + 6 * math.sqrt(2 * df)


def test_uniform_init_in_bounds_with_the_right_mean():
    buf = ReplayBuffer(4000, (8,), bounds=(-0.5, 1.5), generator=_gen(), dtype=torch.float64)
    d = buf.data
    assert d.dtype == torch.float64 and d.min() >= -0.5 and d.max() <= 1.5
    sd = 2.0 / math.sqrt(12) / math.sqrt(d.numel())
    assert abs(d.mean().item() - 0.5) < 5 * sd
    assert abs(d.var().item() - 4.0 / 12) < 0.02


def test_generator_makes_sampling_reproducible():
    def run(seed):
        buf = ReplayBuffer(30, SHAPE, n_classes=3, reinit_freq=0.5, generator=_gen(seed))
        x1, i1 = buf.sample(8)
        x2, i2 = buf.sample(6, torch.tensor([0, 1, 2, 2, 1, 0]))
        return buf.data.clone(), x1, i1, x2, i2

    a, b, c = run(7), run(7), run(8)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])


def test_state_dict_round_trip():
    buf = ReplayBuffer(20, SHAPE, n_classes=4, reinit_freq=0.1, generator=_gen())
    sd = buf.state_dict()
    assert {type(v) for v in sd.values()} <= {torch.Tensor, int, float, list}
    bio = io.BytesIO()
    torch.save(sd, bio)
    saved = buf.data.clone()
    buf.update_(torch.arange(20), torch.zeros(20, *SHAPE))
    other = ReplayBuffer(20, SHAPE, n_classes=4, reinit_freq=0.5)
    bio.seek(0)
    other.load_state_dict(torch.load(bio, weights_only=True))
    assert torch.equal(other.data, saved) and other.reinit_freq == 0.1
    for wrong in (ReplayBuffer(40, SHAPE, n_classes=4), ReplayBuffer(20, (3, 4, 5), n_classes=4),
                  ReplayBuffer(20, SHAPE), ReplayBuffer(20, SHAPE, n_classes=2)):
        with pytest.raises(ValueError, match="capacity, sample_shape, n_classes"):
            wrong.load_state_dict(sd)
    bad = dict(sd, buffer=torch.zeros(19, *SHAPE))
    with pytest.raises(ValueError, match="buffer has shape"):
        other.load_state_dict(bad)
    g = _gen()
    moved = ReplayBuffer(4, (1,), generator=g).to("cpu")
    assert moved.generator is g and moved.device == torch.device("cpu")  # same device: kept


# ---- ClassGaussianInit -----------------------------------------------------------------
def test_gaussian_fit_matches_the_data_and_the_truth():
    x, y, means, covs = _mixture()
    init = ClassGaussianInit.fit(x, y, 3, bounds=(-1e3, 1e3), generator=_gen(1))
    assert init.mean.shape == (3, 4) and init.chol.shape == (3, 4, 4)
    assert init.mean.dtype == init.chol.dtype == torch.float32
    for k in range(3):
        xk = x[y == k]
        torch.testing.assert_close(init.mean[k].double(), xk.double().flatten(1).mean(0), rtol=0, atol=1e-5)
        c = init.chol[k].double()
        torch.testing.assert_close(c @ c.mT, _cov(xk) + 1e-4 * torch.eye(4, dtype=torch.float64),
                                   rtol=0, atol=1e-5)
        assert torch.equal(init.chol[k], init.chol[k].tril())
        _assert_moments(init.mean[k].double(), _cov(xk), means[k], covs[k], xk.shape[0])
        s = init(20000, torch.full((20000,), k))  # sampled per-class moments match the fit
        assert s.shape == (20000, 2, 2) and s.dtype == torch.float32
        _assert_moments(s.double().flatten(1).mean(0), _cov(s), init.mean[k].double(), c @ c.mT, 20000)


def test_gaussian_grouped_and_batched_paths_agree(monkeypatch):
    x, y, _, _ = _mixture(K=5, n=50)
    init = ClassGaussianInit.fit(x, y, 5)
    z = torch.randn(37, 4, generator=_gen(2))
    yy = torch.randint(0, 5, (37,), generator=_gen(3))
    want = torch.stack([init.chol[int(k)] @ zi for zi, k in zip(z, yy)])
    monkeypatch.setattr("ebjdat.sampling.init._CHUNK_ELEMS", 5 * 4 * 8)  # 8-row chunks, ragged end
    for grouped in (True, False):
        torch.testing.assert_close(init._transform(z, yy, grouped=grouped), want, rtol=1e-5, atol=1e-5)


def test_gaussian_clamps_to_bounds():
    x, y, _, _ = _mixture(scale=1.0)
    s = ClassGaussianInit.fit(x, y, 3, bounds=(-0.1, 0.2), generator=_gen())(5000)
    assert s.min() >= -0.1 and s.max() <= 0.2
    assert (s == -0.1).any() and (s == 0.2).any()


def test_gaussian_without_y_uses_every_class():
    x, y, _, _ = _mixture(K=3, n=500, sep=0.0, scale=0.05)
    centres = torch.tensor([0.0, 10.0, 20.0])
    x = x + centres[y].view(-1, 1, 1)
    init = ClassGaussianInit.fit(x, y, 3, bounds=(-100, 100), generator=_gen(4))
    s = init(3000).flatten(1).mean(1)
    cls = (s.unsqueeze(1) - centres).abs().argmin(1)
    counts = torch.bincount(cls, minlength=3)
    assert (counts - 1000).abs().max() < 5 * math.sqrt(3000 / 3 * 2 / 3)
    buf = ReplayBuffer(30, (2, 2), n_classes=3, init=init, reinit_freq=1.0, bounds=(-100, 100))
    row_means = buf.data.flatten(1).mean(1)  # initial rows sit at their partition's class mean
    assert (row_means - 10 * (torch.arange(30) // 10)).abs().max() < 1
    xb, _ = buf.sample(10, torch.full((10,), 2))
    assert (xb.flatten(1).mean(1) - 20).abs().max() < 1


def test_gaussian_state_dict_round_trip():
    x, y, _, _ = _mixture(n=100)
    init = ClassGaussianInit.fit(x, y, 3, bounds=(-2.0, 3.0))
    bio = io.BytesIO()
    torch.save(init.state_dict(), bio)
    bio.seek(0)
    sd = torch.load(bio, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    a = ClassGaussianInit.from_state_dict(sd, generator=_gen(9))
    b = ClassGaussianInit(torch.zeros(3, 4), torch.zeros(3, 4, 4), (2, 2), generator=_gen(9))
    b.load_state_dict(sd)
    assert a.bounds == b.bounds == (-2.0, 3.0) and torch.equal(a.chol, init.chol)
    assert torch.equal(a(16), b(16))
    with pytest.raises(ValueError, match="sample_shape"):
        ClassGaussianInit(torch.zeros(3, 4), torch.zeros(3, 4, 4), (4,)).load_state_dict(sd)
    with pytest.raises(ValueError, match="mean has shape"):
        ClassGaussianInit(torch.zeros(2, 4), torch.zeros(2, 4, 4), (2, 2)).load_state_dict(sd)


# ---- bad input ---------------------------------------------------------------------------
def _cbuf():
    return ReplayBuffer(20, (2,), n_classes=4)


def _bad_init(n, y):
    return torch.zeros(n, 3)


BAD = [
    (lambda: ReplayBuffer(0, (2,)), ValueError, "capacity"),
    (lambda: ReplayBuffer(1.5, (2,)), TypeError, "capacity"),
    (lambda: ReplayBuffer(10, (2, 0)), ValueError, r"sample_shape\[1\]"),
    (lambda: ReplayBuffer(10, (2,), n_classes=3), ValueError, r"capacity \(10\).*n_classes \(3\)"),
    (lambda: ReplayBuffer(10, (2,), reinit_freq=-0.1), ValueError, "reinit_freq"),
    (lambda: ReplayBuffer(10, (2,), reinit_freq=1.5), ValueError, "reinit_freq"),
    (lambda: ReplayBuffer(10, (2,), bounds=(1.0, 1.0)), ValueError, "bounds"),
    (lambda: ReplayBuffer(10, (2,), bounds=(1.0, -1.0)), ValueError, "bounds"),
    (lambda: ReplayBuffer(10, (2,), bounds=(0.0, math.inf)), TypeError, r"bounds\[1\]"),
    (lambda: ReplayBuffer(10, (2,), init="gaussian"), ValueError, "init"),
    (lambda: ReplayBuffer(10, (2,), init=3), TypeError, "init"),
    (lambda: ReplayBuffer(10, (2,), init=_bad_init), ValueError, r"init\(n=10, y\).*\(10, 2\)"),
    (lambda: ReplayBuffer(10, (2,), device="meta", generator=torch.Generator()), ValueError,
     "generator is on cpu"),
    (lambda: ReplayBuffer(10, (2,), dtype=torch.int32), TypeError, "dtype"),
    (lambda: _cbuf().sample(0), ValueError, "batch_size"),
    (lambda: ReplayBuffer(20, (2,)).sample(3, torch.zeros(3, dtype=torch.long)), ValueError, "y was given"),
    (lambda: _cbuf().sample(3, torch.zeros(3)), TypeError, "y must be an integer"),
    (lambda: _cbuf().sample(3, torch.zeros(3, dtype=torch.bool)), TypeError, "y must be an integer"),
    (lambda: _cbuf().sample(3, [0, 1, 2]), TypeError, "y must be a torch.Tensor"),
    (lambda: _cbuf().sample(3, torch.zeros(3, 1, dtype=torch.long)), ValueError, r"y must have shape \(3,\)"),
    (lambda: _cbuf().sample(3, torch.zeros(4, dtype=torch.long)), ValueError, r"y must have shape \(3,\)"),
    (lambda: _cbuf().sample(3, torch.tensor([0, 4, 1])), ValueError, r"y must lie in \[0, 4\), got 4"),
    (lambda: _cbuf().sample(3, torch.tensor([0, -1, 1])), ValueError, r"y must lie in \[0, 4\), got -1"),
    (lambda: _cbuf().sample(3, torch.zeros(3, dtype=torch.long, device="meta")), ValueError, "y is on meta"),
    (lambda: _cbuf().update_(torch.arange(3), torch.zeros(4, 2)), ValueError, "idx has 3 rows but x has 4"),
    (lambda: _cbuf().update_(torch.arange(3), torch.zeros(3, 3)), ValueError, "x must have sample shape"),
    (lambda: _cbuf().update_(torch.arange(3), torch.zeros(3, 2, dtype=torch.long)), TypeError, "x must be"),
    (lambda: _cbuf().update_(torch.arange(3.0), torch.zeros(3, 2)), TypeError, "idx must be"),
    (lambda: _cbuf().update_(torch.zeros(3, 1, dtype=torch.long), torch.zeros(3, 2)), ValueError,
     "idx must have"),
    (lambda: _cbuf().update_(torch.arange(3, device="meta"), torch.zeros(3, 2)), ValueError, "idx is on meta"),
    (lambda: _cbuf().update_(torch.tensor([0, 20]), torch.zeros(2, 2)), IndexError, "index"),
    (lambda: _cbuf().load_state_dict({"buffer": torch.zeros(20, 2)}), ValueError, "sd must be"),
    (lambda: ClassGaussianInit.fit(torch.zeros(5, 2), torch.tensor([0, 0, 1, 1, 2]), 3), ValueError,
     r"at least 2 samples.*\(2, 1\)"),
    (lambda: ClassGaussianInit.fit(torch.zeros(4, 2), torch.tensor([0, 0, 1, 3]), 3), ValueError, "y must lie"),
    (lambda: ClassGaussianInit.fit(torch.zeros(4, 2), torch.tensor([0, 0, 1, 1]), 0), ValueError, "n_classes"),
    (lambda: ClassGaussianInit.fit(torch.zeros(4, 2), torch.tensor([0, 0, 1, 1]), 2, jitter=-1.0),
     ValueError, "jitter"),
    (lambda: ClassGaussianInit.fit(torch.zeros(4, 2), torch.tensor([0, 0, 1, 1]), 2, jitter=0.0),
     ValueError, "positive definite"),
    (lambda: ClassGaussianInit(torch.zeros(2, 4), torch.zeros(2, 4, 3), (4,)), ValueError, "chol"),
    (lambda: ClassGaussianInit(torch.zeros(2, 4), torch.zeros(2, 4, 4), (5,)), ValueError, "sample_shape"),
    (lambda: ClassGaussianInit(torch.zeros(2, 4), torch.zeros(2, 4, 4), (4,))(3, torch.tensor([0, 2, 1])),
     ValueError, r"y must lie in \[0, 2\)"),
    (lambda: ClassGaussianInit(torch.zeros(2, 4), torch.zeros(2, 4, 4), (4,))(-1), ValueError, "n must be"),
]


@pytest.mark.parametrize("call, exc, match", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input_raises_naming_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---- no host synchronisation -------------------------------------------------------------
def test_sample_and_update_never_read_tensors_on_the_host(monkeypatch):
    """On the CPU a sync can't be observed, so every way of reading a tensor's values into
    Python is made to raise while sample/update_ run, with the GPU branches forced: label
    range checks by device assert, the Gaussian init's all-classes batched matmul."""
    x, y, _, _ = _mixture(K=4, n=50)
    gauss = ClassGaussianInit.fit(x.view(200, 4), y, 4, generator=_gen(1))
    monkeypatch.setattr(gauss, "_transform",
                        lambda z, yy: ClassGaussianInit._transform(gauss, z, yy, grouped=False))
    monkeypatch.setattr(validate, "class_range", functools.partial(validate.class_range, host=False))
    bufs = [ReplayBuffer(40, (4,), n_classes=4, reinit_freq=0.5, init=gauss, generator=_gen()),
            ReplayBuffer(40, (4,), reinit_freq=0.5, generator=_gen())]

    def boom(*a, **k):
        raise AssertionError("a tensor was read on the host")

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, boom)
    for buf in bufs:
        xs, idx = buf.sample(16)
        buf.update_(idx, xs + 1.0)
    xc, ic = bufs[0].sample(4, torch.tensor([3, 0, 2, 2]))
    bufs[0].update_(ic, xc)
    monkeypatch.undo()
    for i in idx.tolist():  # a repeated index keeps one of its writes
        assert any(torch.equal(bufs[1].data[i], r + 1.0) for r in xs[idx == i])


@gpu
def test_cuda_sample_and_update_do_not_synchronise():
    dev = torch.device("cuda", torch.cuda.current_device())
    x, y, _, _ = _mixture(K=4, n=50, device=dev)
    gauss = ClassGaussianInit.fit(x.view(200, 4), y, 4, generator=_gen(1, dev))
    bufs = [ReplayBuffer(40, (4,), n_classes=4, init=gauss, device=dev, generator=_gen(0, dev)),
            ReplayBuffer(40, (4,), n_classes=4, device=dev, generator=_gen(2, dev))]
    yq = torch.randint(0, 4, (8,), device=dev)
    torch.cuda.synchronize()
    prev = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for buf in bufs:
            xs, idx = buf.sample(8)
            buf.update_(idx, xs + 0.5)
            xs, idx = buf.sample(8, yq)
            buf.update_(idx, xs.double())
            gauss(8, yq)
    finally:
        torch.cuda.set_sync_debug_mode(prev)
    torch.cuda.synchronize()
    assert torch.equal(idx // 10, yq) and torch.equal(bufs[1].data[idx], xs)


def test_buffer_accepts_the_library_generator():
    """A PhiloxGenerator (what SGLD, PGD and the ops take) seeds the buffer's torch stream."""
    a = ReplayBuffer(32, (3,), generator=ops.PhiloxGenerator(7))
    b = ReplayBuffer(32, (3,), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.data, b.data)
    assert torch.equal(a.sample(5)[0], b.sample(5)[0])
    with pytest.raises(TypeError, match="generator must be a torch.Generator or an ebjdat.ops.PhiloxGenerator"):
        ReplayBuffer(10, (2,), generator=42)


# ---- draws with replacement: no batch-size refusal ------------------------------------------
def test_sample_draws_with_replacement_past_the_capacity_and_the_partition():
    """B may exceed a class's rows (256 of 100) and the capacity (150 of 100)."""
    buf = ReplayBuffer(1000, (3,), n_classes=10, generator=_gen(0))
    y = torch.randint(0, 10, (256,), generator=_gen(1))
    x, idx = buf.sample(256, y)
    assert x.shape == (256, 3) and torch.equal(idx // 100, y)
    small = ReplayBuffer(100, (3,), reinit_freq=0.0, generator=_gen(2))
    x, idx = small.sample(150)
    assert x.shape == (150, 3) and idx.min() >= 0 and idx.max() < 100
    assert torch.equal(x, small.data[idx])
    assert idx.unique().numel() < 150   # with replacement: 150 draws of 100 rows repeat


def test_imagenet_sized_class_buffer_samples_a_batch_of_64():
    """1,000 classes in 10,000 rows (10 a class): class-conditional batches of 64, one class
    or many, draw inside each label's partition."""
    buf = ReplayBuffer(10_000, (2,), n_classes=1000, reinit_freq=0.0, generator=_gen(0))
    for y in (torch.randint(0, 1000, (64,), generator=_gen(3)), torch.full((64,), 999, dtype=torch.long)):
        x, idx = buf.sample(64, y)
        assert x.shape == (64, 2) and torch.equal(idx // 10, y)
        assert torch.equal(x, buf.data[idx])
        buf.update_(idx, x + 1.0)
    counts = torch.bincount(buf.sample(10_000, torch.full((10_000,), 7, dtype=torch.long))[1] - 70, minlength=10)
    stat, dof = _chi2(counts)
    assert stat < 27.9   # chi2(9) at p = 0.001: uniform over class 7's ten rows


def test_update_with_repeated_rows_keeps_the_last_write():
    buf = ReplayBuffer(10, (2,), reinit_freq=0.0, generator=_gen(0))
    before = buf.data.clone()
    idx = torch.tensor([3, 7, 3, 3, 5, 7])
    x = torch.arange(12.0).view(6, 2)
    buf.update_(idx, x)
    assert torch.equal(buf.data[3], x[3]) and torch.equal(buf.data[7], x[5]) and torch.equal(buf.data[5], x[4])
    untouched = torch.tensor([0, 1, 2, 4, 6, 8, 9])
    assert torch.equal(buf.data[untouched], before[untouched])
    with pytest.raises(IndexError):
        buf.update_(torch.tensor([3, 10]), torch.zeros(2, 2))
