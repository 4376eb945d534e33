"""MALA: the fused ops mala_propose_ and mala_accept_ against float64 evaluations and the
torch backend (odd shapes, every float dtype, every layout, the same Philox draws in every
backend), and the MALA sampler on a Gaussian, where the answer is known."""
import math

import numpy as np
import pytest
import torch

import ebjdat
from ebjdat import compiling, ops
from ebjdat.ops import philox
from ebjdat.sampling import MALA, SGLD

from . import oracle
from .conftest import gpu, require_backend
from .inputs import DTYPES, cases, gaps_untouched, make
from .tolerances import assert_bitwise, assert_close, noise_tol

SEED, OFFSET = 2024, 9


def _generator():
    gen = ops.PhiloxGenerator(SEED)
    gen.state[1] = OFFSET
    return gen


# ----------------------------------------------------------------------------- mala_propose_
def _propose(backend, shape, dtype, layout, h):
    x = make(shape, dtype, layout, seed=1)
    g = make(shape, torch.float32 if dtype != torch.float32 else torch.bfloat16, layout, seed=2, scale=3.0,
             special=True)
    x_prop = make(shape, dtype, layout, seed=3)   # garbage: the op writes it without reading
    gen = _generator()
    with ops.use_backend(backend):
        assert ops.mala_propose_(x_prop, x, g, step_size=h, generator=gen) is x_prop
    assert gaps_untouched(x_prop)
    assert gen.offset == OFFSET + philox.counters_for(x.numel()) and int(gen.state[2]) & 0xFFFFFFFF == 0
    return x_prop, x, g


@pytest.mark.parametrize("h", [0.01, 0.5])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,layout", cases())
def test_mala_propose(backend, shape, layout, dtype, h):
    """x_prop = x + h grad + sqrt(2h) z against float64 and the torch backend; bit for bit
    the sgld_step_ of a copy of x with noise_std sqrt(2h), in the same backend."""
    x_prop, x, g = _propose(backend, shape, dtype, layout, h)
    std = math.sqrt(2 * h)
    want = oracle.sgld(x, g, step_size=h, noise_std=std, z=oracle.noise(SEED, OFFSET, shape))
    assert_close(x_prop, want, noise_tol(dtype, std))
    same = x.clone()
    with ops.use_backend(backend):
        ops.sgld_step_(same, g, step_size=h, noise_std=std, generator=_generator())
    assert_bitwise(x_prop, same)
    if backend != "torch":
        assert_close(x_prop, _propose("torch", shape, dtype, layout, h)[0], noise_tol(dtype, std))


def test_mala_propose_in_place(backend):
    """x_prop may be x itself: an in-place Langevin step, sgld_step_'s bits."""
    x = torch.rand(3, 2, 5, 7).contiguous(memory_format=torch.channels_last)
    g, y = torch.randn(3, 2, 5, 7), x.clone()
    with ops.use_backend(backend):
        ops.mala_propose_(x, x, g, step_size=0.2, generator=_generator())
        ops.sgld_step_(y, g, step_size=0.2, noise_std=math.sqrt(0.4), generator=_generator())
    assert_bitwise(x, y)


# ----------------------------------------------------------------------------- mala_accept_
def _per_sample(b, dtype, seed):
    """energy, energy_prop, log_q_fwd, log_q_rev of b samples (about half accepted); with
    three or more samples one NaN (rejected) and one -inf proposal energy (accepted)."""
    gen = torch.Generator().manual_seed(seed)
    e, ep, lf, lr = (torch.randn(b, generator=gen, dtype=torch.float64) for _ in range(4))
    if b >= 3:
        ep[0], ep[1] = float("nan"), float("-inf")
    return tuple(t.to(dtype) for t in (e, ep, lf, lr))


def decisions(seed, offset, e, ep, lf, lr) -> torch.Tensor:
    """The acceptances by an independent evaluation: u_b = ((r >> 9) + 0.5) * 2**-23 of
    Philox word b % 4 of counter offset + b // 4, a_b in numpy scalars of the per-sample
    compute dtype, log in Python's double precision."""
    b = e.shape[0]
    words = philox.philox4x32(torch.tensor(seed), offset + torch.arange((b + 3) // 4))
    w = torch.stack(words, 1).reshape(-1)[:b].tolist()
    p = np.float64 if e.dtype == torch.float64 else np.float32
    out = []
    for i in range(b):
        a = (p(e[i].item()) - p(ep[i].item())) + (p(lr[i].item()) - p(lf[i].item()))
        out.append(math.log(((w[i] >> 9) + 0.5) * 2.0**-23) < float(a))
    return torch.tensor(out, dtype=torch.bool)


def _accept(backend, shape, dtype, layout, sample_dtype):
    x = make(shape, dtype, layout, seed=4)
    x_prop = make(shape, dtype, layout, seed=5, special=True)
    samples = _per_sample(shape[0], sample_dtype, seed=6)
    accepted = torch.zeros(shape[0], dtype=torch.bool)
    gen = _generator()
    x0 = x.clone()
    with ops.use_backend(backend):
        assert ops.mala_accept_(x, x_prop, *samples, accepted, generator=gen) is x
    assert gaps_untouched(x)
    assert gen.offset == OFFSET + philox.counters_for(shape[0]) and int(gen.state[2]) & 0xFFFFFFFF == 0
    return x, x0, x_prop, samples, accepted


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,layout", cases())
def test_mala_accept(backend, shape, layout, dtype):
    """The decisions equal the independent evaluation, accepted rows are x_prop's bits and
    rejected ones untouched, in every backend alike; per-sample tensors of x's dtype
    (fp32 for fp64 x: the two dtypes need not match)."""
    sample_dtype = torch.float32 if dtype == torch.float64 else dtype
    x, x0, x_prop, samples, accepted = _accept(backend, shape, dtype, layout, sample_dtype)
    want = decisions(SEED, OFFSET, *samples)
    assert torch.equal(accepted, want)
    if shape[0] >= 3:
        assert not accepted[0] and accepted[1]           # NaN rejects; E(x') = -inf accepts
    rows = want.reshape((-1,) + (1,) * (len(shape) - 1))
    assert_bitwise(x, torch.where(rows, x_prop, x0))
    if backend != "torch":
        ref = _accept("torch", shape, dtype, layout, sample_dtype)
        assert_bitwise(x, ref[0])
        assert torch.equal(accepted, ref[4])


@pytest.mark.parametrize("sample_dtype", [torch.float64, torch.bfloat16])
def test_mala_accept_strided_vectors_and_sample_dtypes(backend, sample_dtype):
    """Per-sample tensors and the mask as strided views, in fp64 and bf16: the same
    decisions; the mask's gaps untouched."""
    b = 9
    x, x_prop = torch.rand(b, 2, 3), torch.rand(b, 2, 3)
    samples = [t.repeat_interleave(2)[::2] for t in _per_sample(b, sample_dtype, seed=7)]
    buffer = torch.ones(2 * b, dtype=torch.bool)
    accepted = buffer[::2]
    x0 = x.clone()
    with ops.use_backend(backend):
        ops.mala_accept_(x, x_prop, *samples, accepted, generator=_generator())
    want = decisions(SEED, OFFSET, *samples)
    assert torch.equal(accepted, want) and buffer[1::2].all()
    assert_bitwise(x, torch.where(want[:, None, None], x_prop, x0))


def test_mala_accept_needs_a_batch_dimension():
    with pytest.raises(ValueError, match="energy is per sample: x must have a batch dimension"):
        ops.mala_accept_(torch.tensor(0.5), torch.tensor(0.5), *[torch.zeros(1)] * 4, torch.zeros(1, dtype=torch.bool))


def test_mala_accept_without_elements_still_decides(backend):
    """Samples of no elements still draw and report their decisions; no samples draw
    nothing."""
    x, x_prop = torch.zeros(5, 0), torch.zeros(5, 0)
    samples = _per_sample(5, torch.float32, seed=8)
    accepted, gen = torch.zeros(5, dtype=torch.bool), _generator()
    with ops.use_backend(backend):
        ops.mala_accept_(x, x_prop, *samples, accepted, generator=gen)
        assert torch.equal(accepted, decisions(SEED, OFFSET, *samples)) and gen.offset == OFFSET + 2
        none = torch.zeros(0, dtype=torch.bool)
        ops.mala_accept_(torch.zeros(0, 3), torch.zeros(0, 3), *[torch.zeros(0)] * 4, none, generator=gen)
        ops.mala_propose_(torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 3), step_size=0.1, generator=gen)
    assert gen.offset == OFFSET + 2


# ----------------------------------------------------------------------------- on a GPU
def _cuda(t, layout):
    """A CUDA copy of t in ``layout`` ("strided": every other element of a buffer)."""
    if layout == "strided":
        return torch.empty(t.shape[:-1] + (2 * t.shape[-1],), dtype=t.dtype, device="cuda")[..., ::2].copy_(t)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    return torch.empty(t.shape, dtype=t.dtype, device="cuda", memory_format=fmt).copy_(t)


def _gpu_step(backend, x, g, samples, h):
    """One proposal and one accept on copies, under ``backend``; (x_prop, x, accepted, offset)."""
    gen = ops.PhiloxGenerator(SEED, device="cuda")
    x, x_prop = x.clone(), torch.empty_like(x)
    accepted = torch.zeros(x.shape[0], dtype=torch.bool, device="cuda")
    with ops.use_backend(backend):
        ops.mala_propose_(x_prop, x, g, step_size=h, generator=gen)
        ops.mala_accept_(x, x_prop, *samples, accepted, generator=gen)
    torch.cuda.synchronize()
    return x_prop, x, accepted, gen.offset


@gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("shape", [(33, 3, 8, 8), (5, 3, 61, 67)])
def test_mala_ops_on_the_gpu(backend, dtype, layout, shape):
    """Both GPU backends against the torch backend on the same CUDA tensors: the proposal
    within the noise tolerance, the decisions and rows bit for bit, the same generator."""
    require_backend(backend)
    x = _cuda(make(shape, dtype, seed=1), layout)
    g = _cuda(make(shape, dtype, seed=2, special=True), layout)
    samples = [t.cuda() for t in _per_sample(shape[0], torch.float32, seed=3)]
    got, ref = _gpu_step(backend, x, g, samples, 0.3), _gpu_step("torch", x, g, samples, 0.3)
    assert got[3] == ref[3]
    assert_close(got[0], ref[0], noise_tol(dtype, math.sqrt(0.6)))
    assert torch.equal(got[2], ref[2])
    assert_bitwise(got[1], torch.where(got[2].reshape(-1, 1, 1, 1), got[0], x))


@gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_mala_step_replays_in_a_cuda_graph_with_fresh_draws(backend):
    require_backend(backend)
    x0 = torch.rand(16, 3, 8, 8, device="cuda")
    g = torch.randn_like(x0)
    samples = [t.cuda() for t in _per_sample(16, torch.float32, seed=4)]
    x, x_prop = x0.clone(), torch.empty_like(x0)
    accepted = torch.zeros(16, dtype=torch.bool, device="cuda")
    gen = ops.PhiloxGenerator(1, device="cuda")

    def step():
        ops.mala_propose_(x_prop, x, g, step_size=0.1, generator=gen)
        ops.mala_accept_(x, x_prop, *samples, accepted, generator=gen)

    with ops.use_backend(backend):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()   # warm-up off the capture
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        gen.manual_seed(1)
        replays = []
        for _ in range(2):
            x.copy_(x0)
            graph.replay()
            replays.append((x_prop.clone(), x.clone(), accepted.clone()))
        eager = ops.PhiloxGenerator(1, device="cuda")
        for rp, rx, ra in replays:
            xe, xpe, ae = x0.clone(), torch.empty_like(x0), torch.zeros_like(accepted)
            ops.mala_propose_(xpe, xe, g, step_size=0.1, generator=eager)
            ops.mala_accept_(xe, xpe, *samples, ae, generator=eager)
            assert_bitwise(rp, xpe)
            assert_bitwise(rx, xe)
            assert torch.equal(ra, ae)
    assert gen.offset == eager.offset and not torch.equal(replays[0][0], replays[1][0])


# ----------------------------------------------------------------------------- the sampler
SIGMA2, H, CHAINS, DIM = 1.0, 0.5, 4096, 8


def gaussian(x):
    """E(x) = ||x||^2 / (2 sigma^2): the target N(0, sigma^2 I)."""
    return x.flatten(1).square().sum(1) / (2 * SIGMA2)


def _fast_backend():
    """The extension's host loops run these chains fastest on the CPU; the math is the same
    in every backend (checked above)."""
    return "cuda" if "cuda" in ops.available_backends() else "torch"


def test_mala_is_exact_on_a_gaussian_where_langevin_is_biased():
    """At step h = sigma^2 / 2 unadjusted Langevin (SGLD, noise sqrt(2h)) settles at
    variance sigma^2 / (1 - h / (2 sigma^2)) = 4/3, MALA at sigma^2 = 1. 4096 chains of 8
    coordinates, from variance 9, 150 steps: each variance estimate has a standard error
    of sqrt(2 / 32768) v, under 0.011, so 0.06 is over 5 standard errors and the gap of 1/3
    over 30; the seeds are fixed. Then, from the chains' stationary states, MALA's
    acceptance rate matches its stationary expectation E[min(1, alpha)], computed directly
    in float64 from 2**20 exact draws (x ~ N(0, sigma^2), z ~ N(0, 1)): standard error
    under 0.001 for each, tolerance 0.01."""
    x0 = 3 * torch.randn(CHAINS, DIM, generator=torch.Generator().manual_seed(1))
    with ops.use_backend(_fast_backend()):
        mala = MALA(gaussian, n_steps=150, step_size=H, generator=ops.PhiloxGenerator(2))
        xm = mala.sample(x_init=x0)
        ula = SGLD(gaussian, n_steps=150, step_size=H, noise_std=math.sqrt(2 * H), generator=ops.PhiloxGenerator(3))
        xu = ula.sample(x_init=x0)
        biased = SIGMA2 / (1 - H / (2 * SIGMA2))
        assert abs(xm.var().item() - SIGMA2) < 0.06 and abs(xm.mean().item()) < 0.04
        assert abs(xu.var().item() - biased) < 0.06
        assert xu.var().item() - xm.var().item() > 0.25
        mala.sample(x_init=xm)   # stationary from the first step
    rate = mala.acceptance_rate()
    assert mala.accepted.shape == (CHAINS,) and mala.accepted.max() <= 150
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1 << 20, DIM, generator=g, dtype=torch.float64) * math.sqrt(SIGMA2)
    xp = x - H * x / SIGMA2 + math.sqrt(2 * H) * torch.randn(x.shape, generator=g, dtype=torch.float64)
    log_q_fwd = -(xp - x + H * x / SIGMA2).square().sum(1) / (4 * H)
    log_q_rev = -(x - xp + H * xp / SIGMA2).square().sum(1) / (4 * H)
    alpha = ((gaussian(x) - gaussian(xp)) + (log_q_rev - log_q_fwd)).clamp(max=0).exp()
    assert abs(rate - alpha.mean().item()) < 0.01, (rate, alpha.mean().item())


def test_mala_chain_equals_a_direct_torch_chain():
    """The sampler's chain, step by step, is the textbook MALA chain written directly in
    float64 torch with the closed-form gradient and the same Philox draws (proposal
    normals, then one uniform per chain): the same accept decisions in every chain, so the
    same acceptance counts, and the same states to rounding."""
    b, steps, seed = 256, 30, 11
    x0 = 2 * torch.randn(b, DIM, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    with ops.use_backend("torch"):   # philox.py's own normals (other backends: within NOISE_ATOL)
        mala = MALA(gaussian, n_steps=steps, step_size=H, generator=ops.PhiloxGenerator(seed))
        got = mala.sample(x_init=x0)
    state = ops.PhiloxGenerator(seed).state
    x, counts = x0.clone(), torch.zeros(b, dtype=torch.int64)
    for _ in range(steps):
        z = philox.normal(state, x.shape).double()
        state[1] += philox.counters_for(x.numel())
        xp = x - H * x / SIGMA2 + math.sqrt(2 * H) * z
        log_q_fwd = -(xp - x + H * x / SIGMA2).square().sum(1) / (4 * H)
        log_q_rev = -(x - xp + H * xp / SIGMA2).square().sum(1) / (4 * H)
        u = philox.uniforms(state, b).double()
        state[1] += philox.counters_for(b)
        take = torch.log(u) < (gaussian(x) - gaussian(xp)) + (log_q_rev - log_q_fwd)
        x = torch.where(take[:, None], xp, x)
        counts += take
    assert torch.equal(mala.accepted, counts) and 0 < counts.sum() < b * steps
    torch.testing.assert_close(got, x, rtol=1e-12, atol=1e-12)
    assert mala.acceptance_rate() == counts.sum().item() / (b * steps)


def test_mala_compiles_each_step_into_one_graph():
    """compile(): the same chains as eager; with dynamo tracing autograd.grad, the whole
    call is one graph without a break."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 1))
    energy = lambda v: model(v).squeeze(1) + v.flatten(1).square().sum(1)  # noqa: E731
    x = torch.rand(4, 3, 2, 2)
    eager = MALA(energy, n_steps=3, step_size=0.05, generator=ops.PhiloxGenerator(0))
    want = eager.sample(x_init=x)
    if compiling.traces_autograd():
        torch._dynamo.reset()
        with torch._dynamo.config.patch(trace_autograd_ops=True):
            ex = torch._dynamo.explain(lambda v: eager.sample(x_init=v))(x)
        assert (ex.graph_count, ex.graph_break_count) == (1, 0), ex.break_reasons
    compiled = MALA(energy, n_steps=3, step_size=0.05, generator=ops.PhiloxGenerator(0)).compile(backend="eager")
    got = compiled.sample(x_init=x)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert torch.equal(compiled.accepted, eager.accepted)


def test_mala_channels_last_chains_draw_the_contiguous_result():
    x = torch.rand(3, 2, 4, 5) * 2 - 1
    out = {}
    for fmt in (None, torch.channels_last):
        m = MALA(gaussian, n_steps=4, step_size=0.3, generator=ops.PhiloxGenerator(4), memory_format=fmt)
        out[fmt] = (m.sample(x_init=x), m.accepted)
    assert out[torch.channels_last][0].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out[torch.channels_last][0], out[None][0], rtol=1e-6, atol=1e-6)
    assert torch.equal(out[torch.channels_last][1], out[None][1])


def test_mala_settings_and_exports():
    assert ebjdat.MALA is MALA and "MALA" in ebjdat.__all__ and "MALA" in ebjdat.sampling.__all__
    for bad, exc in ((0.0, ValueError), (-0.1, ValueError), (float("nan"), ValueError), ("0.1", TypeError)):
        with pytest.raises(exc, match="step_size"):
            MALA(gaussian, n_steps=1, step_size=bad)
    m = MALA(lambda v: v.sum(), n_steps=1, step_size=0.1)
    with pytest.raises(ValueError, match="one energy per sample"):
        m.sample(x_init=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="no proposals yet"):
        MALA(gaussian, n_steps=1, step_size=0.1).acceptance_rate()
    with pytest.raises(ValueError, match="generator is on meta"):
        MALA(gaussian, n_steps=1, step_size=0.1, generator=ops.PhiloxGenerator(0, device="meta")).sample(
            x_init=torch.zeros(2, 3))
