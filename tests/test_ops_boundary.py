"""Memory safety at the ops' boundary: every public entry (``torch.ops.ebjdat.*`` and the
extension's fastcall functions) refuses mismatched sizes, short generator states,
inference tensors, bad norms and a Philox offset about to wrap, before any memory is
touched, on every backend."""
import math

import pytest
import torch

from ebjdat import ops
from ebjdat.ops import cuda

from .conftest import BACKENDS, require_backend

INF = math.inf
OPS = torch.ops.ebjdat


def _state(n=3):
    return torch.zeros(n, dtype=torch.int64)


def _calls(x, b):
    """One well-formed call per op on (4, 6) fp32 x with backend b, as (name, fn(x, like,
    state)): ``like`` replaces every tensor that must match x, ``state`` the generator state."""
    e = torch.zeros(4)
    acc = torch.zeros(4, dtype=torch.bool)
    return [
        ("sgld_step_", lambda x, like, st: OPS.sgld_step_(x, like, st, 0.1, 0.5, INF, -INF, INF, b)),
        ("pgd_step_", lambda x, like, st: OPS.pgd_step_(x, like, like, 0.1, 0.3, "linf", 0.0, 1.0, b)),
        ("pgd_init_", lambda x, like, st: OPS.pgd_init_(x, like, st, 0.3, "linf", 0.0, 1.0, b)),
        ("mala_propose_", lambda x, like, st: OPS.mala_propose_(x, like, like, st, 0.01, b)),
        ("mala_accept_", lambda x, like, st: OPS.mala_accept_(x, like, e, e, e, e, acc, st, b)),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_dispatcher_entries_refuse_bad_sizes_states_and_inference_tensors(backend):
    require_backend(backend)
    for name, call in _calls(None, backend):
        x = torch.zeros(4, 6)
        call(x, torch.zeros(4, 6), _state())                      # well-formed: runs
        before = x.clone()
        with pytest.raises(ValueError, match=r"has shape \(4, 5\), expected \(4, 6\)"):
            call(x, torch.zeros(4, 5), _state())
        with pytest.raises(ValueError, match=r"has shape \(10000,\), expected \(4, 6\)"):
            call(x, torch.zeros(10**4), _state())
        if name != "pgd_step_":                                   # the ops that draw
            with pytest.raises(ValueError, match=r"state must be an int64 tensor of shape \(3,\)"):
                call(x, torch.zeros(4, 6), _state(1))
        with torch.inference_mode():
            frozen = torch.zeros(4, 6)
        with pytest.raises(RuntimeError, match="inference tensor outside InferenceMode"):
            call(frozen, torch.zeros(4, 6), _state())
        with torch.inference_mode():
            frozen_state = _state()
        if name != "pgd_step_":
            with pytest.raises(RuntimeError, match="inference tensor outside InferenceMode"):
                call(x, torch.zeros(4, 6), frozen_state)
        assert torch.equal(x, before), name


@pytest.mark.parametrize("backend", BACKENDS)
def test_dispatcher_entries_refuse_bad_norms_and_radii(backend):
    require_backend(backend)
    x, g = torch.zeros(4, 6), torch.ones(4, 6)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        OPS.pgd_step_(x, g, x.clone(), 0.1, -1.0, "bogus", 0.0, 1.0, backend)
    with pytest.raises(ValueError, match="norm must be one of"):
        OPS.pgd_step_(x, g, x.clone(), 0.1, 0.3, "bogus", 0.0, 1.0, backend)
    with pytest.raises(ValueError, match="norm must be one of"):
        OPS.pgd_init_(x, x.clone(), _state(), 0.3, "l1", 0.0, 1.0, backend)
    assert torch.equal(x, torch.zeros(4, 6))


def test_public_ops_refuse_inference_tensors_on_every_backend():
    """As torch's own in-place ops do, outside inference mode; inside it they run."""
    for backend in ops.available_backends():
        with torch.inference_mode():
            x = torch.zeros(8)
        with ops.use_backend(backend), pytest.raises(RuntimeError, match="inference tensor"):
            ops.sgld_step_(x, torch.ones(8), step_size=1.0)
        with torch.inference_mode(), ops.use_backend(backend):
            ops.sgld_step_(x, torch.ones(8), step_size=1.0)
        assert torch.equal(x, torch.ones(8)), backend


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_offset_refuses_to_wrap(backend):
    """A call that would carry the offset past 2**63 - 1 is refused before it writes; a
    state restored with such an offset is refused when restored."""
    require_backend(backend)
    gen = ops.PhiloxGenerator(3)
    gen.state[1] = 2**63 - 10
    x = torch.zeros(100)
    with ops.use_backend(backend), pytest.raises(ValueError, match=r"offset .* would pass 2\*\*63 - 1"):
        ops.sgld_step_(x, torch.ones(100), step_size=1.0, noise_std=0.1, generator=gen)
    assert torch.equal(x, torch.zeros(100)) and gen.state[1] == 2**63 - 10
    with ops.use_backend(backend), pytest.raises(ValueError, match="would pass"):
        ops.pgd_init_(x.reshape(4, 25), x.reshape(4, 25).clone(), eps=0.1, norm="l2", generator=gen)
    gen.state[1] = 2**63 - 26                                     # room for exactly 25 counters
    with ops.use_backend(backend):
        ops.sgld_step_(x, torch.ones(100), step_size=1.0, noise_std=0.1, generator=gen)
    assert gen.state[1] == 2**63 - 1


def test_generator_on_a_missing_gpu_is_a_value_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        ops.PhiloxGenerator(0, device="cuda")


def test_extension_entries_check_every_count_before_touching_memory():
    """The fastcall entries take each tensor's element count with its pointer: a grad of 4
    elements for x of 10**6, or a 1-element state, is refused (no segfault, nothing
    written), on the host entries and the device entries alike (checks come first)."""
    require_backend("cpu")
    C = cuda.extension()
    x, g, st = torch.zeros(10**6), torch.ones(4), torch.zeros(1, dtype=torch.int64)
    good_state = _state()
    host = [x.data_ptr(), g.data_ptr(), good_state.data_ptr(), x.numel(), g.numel(), 3, 0, 0, 1.0, 0.5, INF,
            -INF, INF, 0, 0, 0]
    with pytest.raises(ValueError, match=r"grad has 4 elements, expected 1000000 \(those of x\)"):
        C.sgld_step_host(*host, 1)
    with pytest.raises(ValueError, match=r"grad has 4 elements"):
        C.sgld_step(*host, 0, 0)
    g = torch.ones(10**6)
    host[1], host[4], host[2], host[5] = g.data_ptr(), g.numel(), st.data_ptr(), 1
    with pytest.raises(ValueError, match=r"state has 1 elements, expected 3"):
        C.sgld_step_host(*host, 1)
    xo = torch.zeros(7)
    with pytest.raises(ValueError, match=r"x_orig has 7 elements, expected 1000000"):
        C.pgd_step_host(x.data_ptr(), g.data_ptr(), xo.data_ptr(), x.numel(), g.numel(), xo.numel(), 1, 0, 0,
                        0.1, True, 0.1, False, 0.0, 1.0, 1)
    with pytest.raises(ValueError, match=r"state has 1 elements, expected 3"):
        C.pgd_init_host(x.data_ptr(), x.data_ptr(), st.data_ptr(), x.numel(), x.numel(), 1, 1, 0, 0.1, False,
                        0.0, 1.0, 0, 0, 0, 1)
    assert not x.any() and not st.any()
