"""Property-based checks (hypothesis): any shape, dtype, scalars and layout, every backend
equals the float64 formulas and the torch backend."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebjdat import ops

from . import oracle
from .conftest import BACKENDS, require_backend
from .inputs import DTYPES
from .tolerances import TOL, TOL_REDUCE, assert_bitwise, assert_close, noise_tol

EXAMPLES = {"torch": 60, "cuda": 60, "cpu": 60, "triton": 15}  # the Triton interpreter is slow
shapes = st.lists(st.integers(1, 9), min_size=1, max_size=4).map(tuple)
finite = st.floats(0.0, 4.0, allow_nan=False, width=32)
bounds = st.one_of(st.none(), st.tuples(st.floats(-3, 0, width=32), st.floats(0, 3, width=32)))


def _tensor(shape, dtype, seed, channels_last):
    t = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t


def _both(backend, fn, *tensors):
    """fn on fresh copies under ``backend`` and under torch (copies keep the layout)."""
    outs = []
    for name in (backend, "torch"):
        copies = [t.clone() for t in tensors]
        with ops.use_backend(name):
            fn(*copies)
        outs.append(copies[0])
    return outs


@pytest.mark.parametrize("backend", BACKENDS)
def test_sgld_any_input(backend):
    require_backend(backend)

    @settings(max_examples=EXAMPLES[backend], deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(shape=shapes, dtype=st.sampled_from(DTYPES), gdtype=st.sampled_from(DTYPES),
           step=finite, std=st.sampled_from([0.0, 0.01, 1.0]), clip=st.one_of(st.none(), finite),
           clamp=bounds, seed=st.integers(0, 2**64 - 1), cl=st.booleans())
    def check(shape, dtype, gdtype, step, std, clip, clamp, seed, cl):
        x, g = _tensor(shape, dtype, 0, cl), _tensor(shape, gdtype, 1, cl)
        kw = dict(step_size=step, noise_std=std, grad_clip=clip, clamp=clamp)
        fn = lambda t: ops.sgld_step_(t, g, generator=ops.PhiloxGenerator(seed), **kw)  # noqa: E731
        got, ref = _both(backend, fn, x)
        z = oracle.noise(seed - 2**64 if seed >= 2**63 else seed, 0, shape)
        tol = noise_tol(dtype, std) if std else TOL[dtype]
        assert_close(got, oracle.sgld(x, g, z=z, **kw), tol)
        assert_close(got, ref, tol) if std else assert_bitwise(got, ref)

    check()


@pytest.mark.parametrize("backend", BACKENDS)
def test_pgd_any_input(backend):
    require_backend(backend)

    @settings(max_examples=EXAMPLES[backend], deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(shape=shapes, dtype=st.sampled_from(DTYPES), norm=st.sampled_from(["linf", "l2"]),
           alpha=finite, eps=st.one_of(st.none(), finite), clamp=bounds, cl=st.booleans())
    def check(shape, dtype, norm, alpha, eps, clamp, cl):
        xo, g = _tensor(shape, dtype, 2, cl), _tensor(shape, torch.float32, 3, cl)
        xa = xo + _tensor(shape, dtype, 4, cl) * 0.1
        kw = dict(alpha=alpha, eps=eps, norm=norm, clamp=clamp)
        got, ref = _both(backend, lambda t: ops.pgd_step_(t, g, xo, **kw), xa)
        tol = TOL[dtype] if norm == "linf" else TOL_REDUCE[dtype]
        assert_close(got, oracle.pgd_step(xa, g, xo, **kw), tol)
        assert_bitwise(got, ref) if norm == "linf" else assert_close(got, ref, tol)

    check()
