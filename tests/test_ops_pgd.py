"""pgd_step_ and pgd_init_ against float64 evaluations and against the torch backend."""
import pytest
import torch

from ebjdat import ops
from ebjdat.ops import philox

from . import oracle
from .conftest import require_backend
from .inputs import DTYPES, cases, gaps_untouched, make
from .tolerances import TOL, TOL_REDUCE, assert_bitwise, assert_close

STEP_VARIANTS = {
    "linf": dict(norm="linf", alpha=2 / 255, eps=8 / 255, clamp=(0.0, 1.0)),
    "linf_noproj": dict(norm="linf", alpha=0.3, eps=None, clamp=(-1.0, 1.0)),
    "linf_noclamp": dict(norm="linf", alpha=0.25, eps=0.5, clamp=None),
    "l2": dict(norm="l2", alpha=0.2, eps=0.5, clamp=(0.0, 1.0)),
    "l2_noproj": dict(norm="l2", alpha=0.7, eps=None, clamp=None),
}
INIT_VARIANTS = {
    "linf": dict(norm="linf", eps=8 / 255, clamp=(0.0, 1.0)),
    "linf_noclamp": dict(norm="linf", eps=0.5, clamp=None),
    "l2": dict(norm="l2", eps=0.5, clamp=(0.0, 1.0)),
    "l2_noclamp": dict(norm="l2", eps=2.0, clamp=None),
}
SEED, OFFSET = 99, 5


def _images(shape, dtype, layout, seed):
    """x_orig in [0, 1] and an x_adv near it, in the given layout."""
    xo = make(shape, dtype, layout, seed=seed)
    xo.copy_(xo.sigmoid())
    xa = make(shape, dtype, layout, seed=seed + 1, scale=0.05)
    xa.add_(xo)
    return xo, xa


def _step(backend, shape, dtype, layout, kw, special):
    xo, xa = _images(shape, dtype, layout, seed=3)
    g = make(shape, torch.float32 if dtype != torch.float32 else dtype, layout, seed=5, special=special)
    xa0 = xa.clone()
    with ops.use_backend(backend):
        assert ops.pgd_step_(xa, g, xo, **kw) is xa
    assert gaps_untouched(xa)
    return xa, xa0, g, xo


@pytest.mark.parametrize("variant", list(STEP_VARIANTS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,layout", cases())
def test_pgd_step(backend, shape, layout, dtype, variant):
    kw = STEP_VARIANTS[variant]
    special = kw["norm"] == "linf"  # l2 spreads one NaN over the whole sample: tested below
    xa, xa0, g, xo = _step(backend, shape, dtype, layout, kw, special)
    tol = TOL[dtype] if kw["norm"] == "linf" else TOL_REDUCE[dtype]
    assert_close(xa, oracle.pgd_step(xa0, g, xo, **kw), tol)
    if backend != "torch":
        ref = _step("torch", shape, dtype, layout, kw, special)[0]
        if kw["norm"] == "linf":
            assert_bitwise(xa, ref)
        else:
            assert_close(xa, ref, tol)


@pytest.mark.parametrize("variant", list(INIT_VARIANTS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,layout", cases())
def test_pgd_init(backend, shape, layout, dtype, variant):
    kw = INIT_VARIANTS[variant]

    def run(name):
        xo, xa = _images(shape, dtype, layout, seed=7)
        gen = ops.PhiloxGenerator(SEED)
        gen.state[1] = OFFSET
        with ops.use_backend(name):
            assert ops.pgd_init_(xa, xo, generator=gen, **kw) is xa
        drawn = philox.counters_for(xa.numel()) + (xa.shape[0] if kw["norm"] == "l2" else 0)
        assert gen.offset == OFFSET + drawn and int(gen.state[2]) & 0xFFFFFFFF == 0
        assert gaps_untouched(xa)
        return xa, xo

    xa, xo = run(backend)
    tol = TOL[dtype] if kw["norm"] == "linf" else TOL_REDUCE[dtype]
    # the normals differ across backends only through log/cos (NOISE_ATOL, scaled by eps)
    tol = (tol[0], tol[1] + 1e-5 * kw["eps"])
    assert_close(xa, oracle.pgd_init(xo, seed=SEED, offset=OFFSET, **kw), tol)
    d = (xa.double() - xo.double()).reshape(xa.shape[0], -1)
    if kw["norm"] == "linf":   # the box, widened by the rounding to x's dtype (half an ulp at 1)
        assert d.abs().max() <= kw["eps"] * (1 + 1e-6) + torch.finfo(dtype).eps / 2
    else:
        assert (d.norm(dim=1) <= kw["eps"] * (1 + 1e-2)).all()
    if backend != "torch":
        ref = run("torch")[0]
        if kw["norm"] == "linf":
            assert_bitwise(xa, ref)
        else:
            assert_close(xa, ref, tol)


def test_pgd_linf_semantics(backend):
    """sign(0) = sign(NaN) = 0 (torch.sign); the eps box, then the clamp."""
    nan, inf = float("nan"), float("inf")
    xo = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.95, 0.5])
    xa = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.95, nan])
    g = torch.tensor([0.0, nan, inf, -2.0, 1.0, 1.0])
    ops.pgd_step_(xa, g, xo, alpha=0.25, eps=0.1, norm="linf", clamp=(0.0, 1.0))
    assert_bitwise(xa, torch.tensor([0.5, 0.5, 0.6, 0.4, 1.0, nan]))


def test_pgd_l2_semantics(backend):
    """l2 step: unit-normalised grad; projection onto the ball only when outside it."""
    xo = torch.zeros(3, 4)
    xa = torch.zeros(3, 4)
    g = torch.tensor([[3.0, 4.0, 0, 0], [0, 0, 0, 0], [float("nan"), 1.0, 0, 0]])
    ops.pgd_step_(xa, g, xo, alpha=1.0, eps=0.5, norm="l2", clamp=None)
    assert_close(xa[0], torch.tensor([0.3, 0.4, 0, 0]), TOL[torch.float32])
    assert torch.equal(xa[1], torch.zeros(4))          # zero grad: no move, no NaN
    assert xa[2].isnan().all()                         # NaN spreads over its own sample only
    ops.pgd_step_(xa[:2], g[:2], xo[:2], alpha=0.1, eps=None, norm="l2", clamp=None)
    assert_close(xa[0], torch.tensor([0.36, 0.48, 0, 0]), TOL[torch.float32])
    # sum g^2 overflows fp32: the spec's g / inf is 0, so x stays; the one-pass norm
    # (sum d0^2 + 2 a sum d0 g + a^2 sum g^2) must not turn that into 0 * inf = NaN
    xa, xo = torch.full((1, 4), 0.25), torch.zeros(1, 4)
    ops.pgd_step_(xa, torch.full((1, 4), 1e30), xo, alpha=0.1, eps=0.4, norm="l2", clamp=None)
    assert_close(xa, torch.full((1, 4), 0.2), TOL[torch.float32])   # projected: 0.25 * 0.4 / 0.5


@pytest.mark.parametrize("shape", [(1, 3, 224, 224), (4, 3, 32, 32), (2, 3, 61, 67)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pgd_l2_large_samples(backend, shape, dtype):
    """Samples cut into several chunks (a few large ones fill the GPU) give the spec's
    step, the unaligned tail (3 * 61 * 67 is odd) included."""
    if backend == "triton" and shape[0] == 1:   # the interpreter: 20 s for 224 x 224
        shape = (1, 3, 96, 96)                  # still one sample in 216 chunks
    xo, xa = _images(shape, dtype, "contiguous", seed=11)
    g = make(shape, torch.float32, seed=12)
    ref = xa.clone()
    with ops.use_backend("torch"):
        ops.pgd_step_(ref, g, xo, alpha=0.3, eps=0.5, norm="l2", clamp=(0.0, 1.0))
    ops.pgd_step_(xa, g, xo, alpha=0.3, eps=0.5, norm="l2", clamp=(0.0, 1.0))
    assert_close(xa, ref, TOL_REDUCE[dtype])


@pytest.mark.parametrize("shape", [(1, 3, 224, 224), (4, 3, 32, 32), (2, 3, 61, 67)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_pgd_init_l2_large_samples(backend, shape, layout):
    """The l2 random start in the step's chunks (several per sample: a sum launch and a
    combining launch on the device): the spec's start and generator advance, in both
    layouts, the unaligned tail (3 * 61 * 67 is odd) included."""
    if backend == "triton" and shape[0] == 1:   # the interpreter: slow at 224 x 224
        shape = (1, 3, 64, 64)
    out = {}
    for name in ("torch", backend):
        xo, xa = _images(shape, torch.float32, layout, seed=13)
        gen = ops.PhiloxGenerator(SEED)
        with ops.use_backend(name):
            ops.pgd_init_(xa, xo, eps=0.5, norm="l2", clamp=(0.0, 1.0), generator=gen)
        assert gen.offset == philox.counters_for(xa.numel()) + shape[0]
        out[name] = xa
    tol = TOL_REDUCE[torch.float32]
    assert_close(out[backend], out["torch"], (tol[0], tol[1] + 1e-5 * 0.5))


@pytest.mark.parametrize("shape", [(3, 3, 61, 67), (5, 1, 7, 9), (2, 1, 8, 8)])
def test_pgd_init_l2_chunks_sum_every_element_once(shape):
    """The CUDA l2 start's chunked sum of z^2 (the host twin replays the device's plan)
    covers each element exactly once: in fp64 without a clamp, ||x - x_orig|| of sample b
    is radius_b * eps to rounding, radius_b the spec's uniform of counter
    offset + ceil(n / 4) + b. A chunk-boundary run counted twice or skipped would move
    it by about 1e-4."""
    require_backend("cuda")
    xo = torch.zeros(shape, dtype=torch.float64)
    xa = torch.empty_like(xo)
    gen = ops.PhiloxGenerator(SEED)
    state = gen.state.clone()
    with ops.use_backend("cuda"):
        ops.pgd_init_(xa, xo, eps=0.5, norm="l2", clamp=None, generator=gen)
    n, b = xa.numel(), shape[0]
    radius = philox.uniform(philox.philox4x32(state[0], state[1] + philox.counters_for(n) + torch.arange(b))[0])
    dist = xa.reshape(b, -1).norm(dim=1)
    torch.testing.assert_close(dist, radius.double() * 0.5, rtol=1e-12, atol=0)


def test_pgd_l2_plan():
    """The l2 step's chunks: a CIFAR batch of 4 and one 3x224x224 sample each give
    about a hundred or more blocks (programs), a batch of 1024 one per sample."""
    pytest.importorskip("triton")
    from ebjdat.ops.pgd import triton as tk
    for (b, d), least in {(4, 3072): 96, (1, 150528): 500, (1024, 3072): 1024}.items():
        chunk, splits, block, warps = tk.l2_plan(b, d, torch.float32)
        assert b * splits >= least and (splits == 1 or chunk % block == 0)
        assert (splits - 1) * chunk < d <= splits * chunk and 1 <= warps <= 8
    from ebjdat.ops import cuda
    if cuda.load_error() is None:
        from ebjdat import _C
        assert _C.pgd_l2_scratch(1024 * 3072, 1024, 0) == 0            # one chunk per sample
        assert _C.pgd_l2_scratch(4 * 3072, 4, 0) == 3 * 4 * 24          # 24 chunks of 128
        assert _C.pgd_l2_scratch(150528, 1, 0) >= 3 * 500


def test_pgd_init_eps_zero_is_identity(backend):
    xo = torch.rand(4, 3, 5, 5)
    for norm in ("linf", "l2"):
        xa = torch.empty_like(xo)
        ops.pgd_init_(xa, xo, eps=0.0, norm=norm, generator=ops.PhiloxGenerator(1))
        assert torch.equal(xa, xo)
