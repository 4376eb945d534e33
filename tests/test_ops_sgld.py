"""sgld_step_ against a float64 evaluation of its formula and against the torch backend."""
import pytest
import torch

from ebjdat import ops
from ebjdat.ops import philox

from . import oracle
from .inputs import DTYPES, cases, gaps_untouched, make
from .tolerances import TOL, assert_bitwise, assert_close, noise_tol

VARIANTS = {
    "plain": dict(step_size=0.1),
    "clip_clamp": dict(step_size=1.0, grad_clip=0.5, clamp=(-1.0, 1.0)),
    "noise": dict(step_size=0.01, noise_std=0.3),
    "all_mixed_grad": dict(step_size=0.2, noise_std=1.0, grad_clip=1.0, clamp=(-2.0, 3.0)),
}
SEED, OFFSET = 1234, 77


def _run(backend, shape, dtype, layout, kw, gdtype):
    x = make(shape, dtype, layout, seed=1, scale=2.0, special=True)
    g = make(shape, gdtype, layout, seed=2, scale=3.0, special=True)
    gen = ops.PhiloxGenerator(SEED)
    gen.state[1] = OFFSET
    with ops.use_backend(backend):
        out = ops.sgld_step_(x, g, generator=gen, **kw)
    assert out is x
    assert gaps_untouched(x)
    return x, g, gen


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,layout", cases())
def test_sgld_step(backend, shape, layout, dtype, variant):
    kw = VARIANTS[variant]
    gdtype = dtype
    if variant == "all_mixed_grad":  # grad in another float dtype than x
        gdtype = torch.bfloat16 if dtype == torch.float32 else torch.float32
    x, g, gen = _run(backend, shape, dtype, layout, kw, gdtype)
    x0 = make(shape, dtype, layout, seed=1, scale=2.0, special=True)
    noisy = kw.get("noise_std", 0.0) > 0
    expected = oracle.sgld(x0, g, z=oracle.noise(SEED, OFFSET, shape), **kw)
    assert_close(x, expected, noise_tol(dtype, kw.get("noise_std", 0.0)) if noisy else TOL[dtype])
    assert gen.offset == OFFSET + (philox.counters_for(x.numel()) if noisy else 0)
    assert int(gen.state[2]) & 0xFFFFFFFF == 0
    if backend != "torch":  # the same function as the specification, bit for bit without noise
        ref, _, _ = _run("torch", shape, dtype, layout, kw, gdtype)
        if noisy:
            assert_close(x, ref, noise_tol(dtype, kw["noise_std"]))
        else:
            assert_bitwise(x, ref)


def test_sgld_nan_inf_semantics(backend):
    """NaN stays NaN through clip and clamp; Inf is clamped; a zero grad moves nothing."""
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([0.0, 0.5, nan, inf, -inf, 0.25])
    g = torch.tensor([nan, inf, 1.0, 0.0, 0.0, 0.0])
    ops.sgld_step_(x, g, step_size=0.5, grad_clip=1.0, clamp=(-1.0, 1.0))
    assert_bitwise(x, torch.tensor([nan, 1.0, nan, 1.0, -1.0, 0.25]))


def test_sgld_zero_noise_leaves_generator(backend):
    gen = ops.PhiloxGenerator(3)
    x = torch.zeros(5)
    ops.sgld_step_(x, torch.ones(5), step_size=1.0, noise_std=0.0, generator=gen)
    assert gen.offset == 0 and torch.equal(x, torch.ones(5))


def test_sgld_empty_tensor(backend):
    x = torch.zeros(0, 3)
    gen = ops.PhiloxGenerator(3)
    ops.sgld_step_(x, torch.zeros(0, 3), step_size=1.0, noise_std=1.0, generator=gen)
    assert gen.offset == 0
