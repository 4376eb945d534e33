"""ClassGaussianInit's covariance forms (full, lowrank, diagonal, auto), their state dicts,
and the pieces of a run at 64x64: a WideResNet, the replay buffer, the class-Gaussian
starts, SGLD and the sample grids."""
import functools
import io
import math

import pytest
import torch
from PIL import Image

from ebjdat import ops, plots, validate
from ebjdat.sampling.buffer import ReplayBuffer
from ebjdat.sampling.init import (
    DEFAULT_RANK,
    FULL_MAX_DIM,
    ClassGaussianInit,
    choose_covariance,
)

from .conftest import gpu
from .test_sampling_buffer import _assert_moments, _cov, _gen, _mixture


def _low_rank_data(K=3, n=6, D=20, seed=0):
    """K classes of n points in D > n dimensions: each class covariance has rank n - 1."""
    g = _gen(seed)
    x = torch.randn(K * n, D, generator=g) * torch.linspace(0.1, 1.0, D)
    return x, torch.arange(K).repeat_interleave(n)


def _model_cov(init, k):
    """The covariance the init samples class k from (float64)."""
    F = init.factor[k].double() if init.factor is not None else torch.zeros(init.dim, 0, dtype=torch.float64)
    return F @ F.mT + torch.diag(init.std[k].double() ** 2)


# ---- the automatic choice ---------------------------------------------------------------
def test_auto_keeps_the_published_datasets_full_and_goes_low_rank_above():
    assert choose_covariance(64, 10) == "full"                # digits
    assert choose_covariance(3072, 10) == "full"              # CIFAR-10
    assert choose_covariance(3072, 100) == "full"             # CIFAR-100: 3.5 GiB of factors
    assert choose_covariance(FULL_MAX_DIM, 64) == "full"      # K D^2 = 2^30 exactly
    assert choose_covariance(FULL_MAX_DIM, 65) == "lowrank"
    assert choose_covariance(3072, 1000) == "lowrank"         # ImageNet-32: 35 GiB full
    assert choose_covariance(12288, 1) == "lowrank"           # any 64x64x3
    x, y = _low_rank_data(D=12)
    assert ClassGaussianInit.fit(x, y, 3).covariance == "full"
    big = ClassGaussianInit.fit(torch.rand(6, FULL_MAX_DIM + 1) * 2 - 1, torch.tensor([0, 0, 0, 1, 1, 1]), 2)
    assert big.covariance == "lowrank" and big.rank == DEFAULT_RANK and big.factor.shape == (2, 4097, 32)


def test_explicit_full_is_the_default_fit():
    x, y, _, _ = _mixture(n=300)
    a = ClassGaussianInit.fit(x, y, 3, generator=_gen(1))
    b = ClassGaussianInit.fit(x, y, 3, covariance="full", generator=_gen(1))
    assert torch.equal(a.chol, b.chol) and torch.equal(a.mean, b.mean) and torch.equal(a(50), b(50))
    assert a.factor is None and a.std is None and a.rank is None and a.covariance == "full"


# ---- low rank and diagonal fits ---------------------------------------------------------
def test_low_rank_is_exact_when_the_rank_covers_the_data():
    """With r >= N_k - 1 (the rank of a class's sample covariance) nothing is dropped:
    F F^T + diag(std^2) = Sigma + jitter I (Gram-matrix path, N_k <= D)."""
    x, y = _low_rank_data(n=6, D=20)
    init = ClassGaussianInit.fit(x, y, 3, covariance="lowrank", rank=5, jitter=1e-3)
    assert init.factor.shape == (3, 20, 5) and init.std.shape == (3, 20) and init.covariance == "lowrank"
    for k in range(3):
        xk = x[y == k]
        torch.testing.assert_close(init.mean[k].double(), xk.double().mean(0), rtol=0, atol=1e-6)
        want = _cov(xk) + 1e-3 * torch.eye(20, dtype=torch.float64)
        torch.testing.assert_close(_model_cov(init, k), want, rtol=0, atol=1e-5)
    # more columns than the data have directions: the extra ones are zero
    wide = ClassGaussianInit.fit(x, y, 3, covariance="lowrank", rank=8)
    assert (wide.factor[:, :, 6:] == 0).all() and wide.factor[:, :, :5].abs().amax() > 0


def test_low_rank_keeps_the_top_directions_and_every_variance():
    """N_k > D path: F F^T is Sigma's top-r eigen-part and each pixel keeps its variance."""
    x, y, _, _ = _mixture(n=500)
    x = x.flatten(1)
    init = ClassGaussianInit.fit(x, y, 3, covariance="lowrank", rank=2, jitter=1e-4)
    for k in range(3):
        S = _cov(x[y == k])
        lam, U = torch.linalg.eigh(S)
        top = U[:, 2:] @ torch.diag(lam[2:]) @ U[:, 2:].mT
        F = init.factor[k].double()
        torch.testing.assert_close(F @ F.mT, top, rtol=0, atol=1e-5)
        assert F[:, 0].norm() >= F[:, 1].norm()   # largest direction first
        torch.testing.assert_close(torch.diagonal(_model_cov(init, k)), torch.diagonal(S) + 1e-4,
                                   rtol=0, atol=1e-5)


def test_diagonal_fit_is_the_per_pixel_variance():
    x, y, _, _ = _mixture(n=200)
    init = ClassGaussianInit.fit(x, y, 3, covariance="diagonal", jitter=1e-3)
    assert init.covariance == "diagonal" and init.factor is None and init.rank is None
    for k in range(3):
        xk = x[y == k].double().flatten(1)
        torch.testing.assert_close(init.std[k].double() ** 2, xk.var(0, unbiased=False) + 1e-3, rtol=0, atol=1e-5)


@pytest.mark.parametrize("form", ["lowrank", "diagonal"])
def test_samples_have_the_fitted_moments(form):
    x, y, _, _ = _mixture(n=400)
    kw = {"rank": 2} if form == "lowrank" else {}
    init = ClassGaussianInit.fit(x, y, 3, bounds=(-1e3, 1e3), covariance=form, generator=_gen(3), **kw)
    for k in range(3):
        s = init(20000, torch.full((20000,), k))
        assert s.shape == (20000, 2, 2) and s.dtype == torch.float32
        _assert_moments(s.double().flatten(1).mean(0), _cov(s), init.mean[k].double(), _model_cov(init, k), 20000)


def test_low_rank_chunks_agree_with_a_row_loop(monkeypatch):
    x, y = _low_rank_data(K=4, n=5, D=20)
    init = ClassGaussianInit.fit(x, y, 4, covariance="lowrank", rank=3)
    w = torch.randn(23, 3, generator=_gen(2))
    yy = torch.randint(0, 4, (23,), generator=_gen(3))
    want = torch.stack([init.factor[int(k)] @ wi for wi, k in zip(w, yy)])
    monkeypatch.setattr("ebjdat.sampling.init._CHUNK_ELEMS", 20 * 3 * 4)   # 4-row chunks, ragged end
    torch.testing.assert_close(init._low_rank(w, yy), want, rtol=1e-5, atol=1e-6)


def test_low_rank_sampling_never_reads_tensors_on_the_host(monkeypatch):
    x, y = _low_rank_data(K=4, n=5, D=20)
    init = ClassGaussianInit.fit(x, y, 4, covariance="lowrank", rank=3, generator=_gen(1))
    monkeypatch.setattr(validate, "class_range", functools.partial(validate.class_range, host=False))

    def boom(*a, **k):
        raise AssertionError("a tensor was read on the host")

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, boom)
    out = init(9, torch.tensor([3, 0, 2, 2, 1, 0, 0, 3, 1]))
    out2 = init(7)
    monkeypatch.undo()
    assert out.shape == (9, 20) and out2.shape == (7, 20)


@gpu
def test_cuda_low_rank_fit_on_the_device_and_sampling_without_a_sync():
    dev = torch.device("cuda", torch.cuda.current_device())
    x, y = _low_rank_data(K=4, n=5, D=20)
    init = ClassGaussianInit.fit(x, y, 4, covariance="lowrank", rank=3, device=dev, generator=_gen(1, dev))
    cpu = ClassGaussianInit.fit(x, y, 4, covariance="lowrank", rank=3)
    assert init.factor.device == dev
    for k in range(4):   # the same covariance, wherever it was fitted (columns may differ in sign)
        torch.testing.assert_close(_model_cov(init, k).cpu(), _model_cov(cpu, k), rtol=1e-4, atol=1e-5)
    buf = ReplayBuffer(40, (20,), n_classes=4, init=init, device=dev, generator=_gen(0, dev))
    yq = torch.randint(0, 4, (8,), device=dev)
    torch.cuda.synchronize()
    prev = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        a, b = init(8, yq), init(8)
        xs, idx = buf.sample(8, yq)
        buf.update_(idx, xs)
    finally:
        torch.cuda.set_sync_debug_mode(prev)
    torch.cuda.synchronize()
    assert a.shape == b.shape == (8, 20) and torch.equal(idx // 10, yq)


# ---- state ------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["lowrank", "diagonal"])
def test_state_dict_round_trip_with_weights_only(form):
    x, y = _low_rank_data()
    kw = {"rank": 4} if form == "lowrank" else {}
    init = ClassGaussianInit.fit(x, y, 3, bounds=(-2.0, 3.0), covariance=form, **kw)
    bio = io.BytesIO()
    torch.save(init.state_dict(), bio)
    bio.seek(0)
    sd = torch.load(bio, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    assert ("factor" in sd) == (form == "lowrank") and "chol" not in sd
    a = ClassGaussianInit.from_state_dict({"kind": "class_gaussian", **sd}, generator=_gen(9))
    assert a.covariance == form and a.bounds == (-2.0, 3.0)
    b = ClassGaussianInit(torch.zeros(3, 20), None, (20,), std=torch.ones(3, 20),
                          factor=torch.zeros(3, 20, 4) if form == "lowrank" else None, generator=_gen(9))
    b.load_state_dict(sd)
    assert torch.equal(a(16), b(16)) and torch.equal(b.std, init.std)
    with pytest.raises(ValueError, match="of a full covariance"):
        ClassGaussianInit(torch.zeros(3, 20), torch.zeros(3, 20, 20), (20,)).load_state_dict(sd)
    if form == "lowrank":   # a diagonal init has a subset of its keys: the form itself is compared
        with pytest.raises(ValueError, match="holds a lowrank covariance, this init a diagonal one"):
            ClassGaussianInit(torch.zeros(3, 20), None, (20,), std=torch.ones(3, 20)).load_state_dict(sd)
    with pytest.raises(AttributeError, match=f"has a {form} covariance"):
        a.chol


def test_moving_a_low_rank_init_moves_every_tensor():
    x, y = _low_rank_data()
    init = ClassGaussianInit.fit(x, y, 3, covariance="lowrank", rank=2).to("meta")
    assert init.device.type == init.factor.device.type == init.std.device.type == "meta"


BAD = [
    (lambda: ClassGaussianInit.fit(*_low_rank_data(), 3, covariance="pca"), ValueError, "covariance must be"),
    (lambda: ClassGaussianInit.fit(*_low_rank_data(), 3, covariance="full", rank=2), ValueError,
     "rank=2 applies to covariance='lowrank'"),
    (lambda: ClassGaussianInit.fit(*_low_rank_data(), 3, covariance="lowrank", rank=21), ValueError,
     "rank=21 exceeds D = 20"),
    (lambda: ClassGaussianInit.fit(*_low_rank_data(), 3, covariance="lowrank", rank=0), ValueError, "rank"),
    (lambda: ClassGaussianInit(torch.zeros(2, 4), None, (4,)), ValueError, "give chol"),
    (lambda: ClassGaussianInit(torch.zeros(2, 4), torch.zeros(2, 4, 4), (4,), std=torch.ones(2, 4)), ValueError,
     "not both"),
    (lambda: ClassGaussianInit(torch.zeros(2, 4), None, (4,), std=torch.ones(2, 3)), ValueError,
     r"std must be a \(2, 4\)"),
    (lambda: ClassGaussianInit(torch.zeros(2, 4), None, (4,), std=torch.ones(2, 4), factor=torch.ones(2, 4)),
     ValueError, r"factor must be a \(2, 4, 'r'\)"),
    (lambda: ClassGaussianInit(torch.zeros(2, 4), None, (4,), std=torch.ones(2, 4), factor=torch.ones(2, 4, 0)),
     ValueError, "factor must be"),
    (lambda: ClassGaussianInit(torch.zeros(2, 4), torch.zeros(2, 4, 4)), ValueError, "sample_shape is required"),
    (lambda: ClassGaussianInit.from_state_dict({"mean": torch.zeros(2, 4)}), ValueError, "sd must be"),
]


@pytest.mark.parametrize("call, exc, match", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input_raises_naming_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---- 64x64 ------------------------------------------------------------------------------
def test_a_64x64_run_has_a_model_a_buffer_starts_and_grids(tmp_path):
    """At 64x64x3 (D = 12,288): a tiny WideResNet classifies, the auto class-Gaussian is
    low-rank, fills a class-partitioned replay buffer, SGLD moves its chains, and the
    sample grids are drawn (one row per class)."""
    from ebjdat.energy import ClassifierEnergy
    from ebjdat.models import WideResNet
    from ebjdat.sampling import SGLD

    K, shape = 3, (3, 64, 64)
    g = _gen(0)
    x = (torch.rand(K * 4, *shape, generator=g) * 2 - 1)
    y = torch.arange(K).repeat_interleave(4)
    net = WideResNet(depth=10, width=1, n_classes=K, norm="batch").eval()
    assert net(x[:2]).shape == (2, K)
    init = ClassGaussianInit.fit(x, y, K, generator=_gen(1))
    assert init.covariance == "lowrank" and init.factor.shape == (K, 12288, DEFAULT_RANK)
    # 4 images a class: its covariance has rank 3, so its top-3 factor is all it has
    assert init.factor[:, :, 3:].abs().max() < 1e-6 and init.factor[:, :, :3].norm(dim=1).min() > 1e-2
    buf = ReplayBuffer(6, shape, n_classes=K, init=init, reinit_freq=0.5, generator=_gen(2))
    assert buf.data.shape == (6, *shape) and buf.data.abs().max() <= 1
    # rows of class k sit near class k's mean: closer to it than to the other classes'
    d = torch.cdist(buf.data.flatten(1), init.mean)
    assert torch.equal(d.argmin(1), torch.arange(6) // 2)
    sgld = SGLD(ClassifierEnergy(net), n_steps=2, step_size=1.0, clamp=(-1.0, 1.0), buffer=buf,
                generator=ops.PhiloxGenerator(3))
    before = buf.data.clone()
    xs = sgld.sample(4)
    assert xs.shape == (4, *shape) and not torch.equal(buf.data, before)
    grid = plots.save_class_grid(tmp_path / "classes.png", xs, torch.tensor([0, 1, 2, 2]), K, per_class=2)
    square = plots.save_grid(tmp_path / "grid.png", buf.data)
    with Image.open(grid) as im:
        assert im.height >= K * 64
    with Image.open(square) as im:
        assert im.width >= 3 * 64
    assert math.isfinite(float(net(xs).detach().sum()))
