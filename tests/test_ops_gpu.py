"""GPU-only: both GPU backends against the torch backend on the same CUDA tensors, the
same noise on CPU and GPU, CUDA-graph replays drawing fresh noise, torch.compile."""
import pytest
import torch

from ebjdat import ops
from ebjdat.ops import philox

from .conftest import gpu, require_backend
from .inputs import DTYPES, make
from .tolerances import TOL_REDUCE, assert_bitwise, assert_close, noise_tol

pytestmark = gpu
GPU_BACKENDS = ["triton", "cuda"]
SHAPES = [(7,), (33, 3, 8, 8), (64, 3, 32, 32), (5, 1000003)]


def _place(t, layout):
    """A new GPU copy of t in ``layout`` ("strided": a view of every other element)."""
    if layout == "strided":
        out = torch.empty(t.shape[:-1] + (2 * t.shape[-1],), dtype=t.dtype, device="cuda")[..., ::2]
    else:
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        out = torch.empty(t.shape, dtype=t.dtype, device="cuda", memory_format=fmt)
    return out.copy_(t)


def _inputs(shape, dtype, layout):
    x = make(shape, dtype, seed=1, special=True)
    g = make(shape, dtype, seed=2, special=True)
    xo = make(shape, dtype, seed=3).sigmoid()
    return tuple(_place(t, layout) for t in (x, g, xo))


def _all_ops(backend, x, g, xo, layout):
    """Each op once on fresh copies; returns the results."""
    gen = ops.PhiloxGenerator(42, device="cuda")
    out = {}
    with ops.use_backend(backend):
        for name, fn in {
            "sgld": lambda t: ops.sgld_step_(t, g, step_size=0.1, grad_clip=1.0, clamp=(-1.0, 1.0)),
            "sgld_noise": lambda t: ops.sgld_step_(t, g, step_size=0.1, noise_std=0.5, generator=gen),
            "linf": lambda t: ops.pgd_step_(t, g, xo, alpha=0.01, eps=0.03),
            "l2": lambda t: ops.pgd_step_(t, g, xo, alpha=0.1, eps=0.5, norm="l2"),
            "init_linf": lambda t: ops.pgd_init_(t, xo, eps=0.03, generator=gen),
            "init_l2": lambda t: ops.pgd_init_(t, xo, eps=0.5, norm="l2", generator=gen),
        }.items():
            t = _place(x, layout)
            fn(t)
            out[name] = t
    torch.cuda.synchronize()
    return out, gen.offset


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_gpu_backend_matches_the_spec(backend, dtype, shape, layout):
    require_backend(backend)
    if layout == "channels_last" and len(shape) != 4:
        pytest.skip("channels_last needs 4-D")
    x, g, xo = _inputs(shape, dtype, layout)
    got, off = _all_ops(backend, x, g, xo, layout)
    ref, off_ref = _all_ops("torch", x, g, xo, layout)
    assert off == off_ref
    for k in ("sgld", "linf", "init_linf"):
        assert_bitwise(got[k], ref[k], msg=k)
    assert_close(got["sgld_noise"], ref["sgld_noise"], noise_tol(dtype, 0.5), msg="sgld_noise")
    for k in ("l2", "init_l2"):
        assert_close(got[k], ref[k], TOL_REDUCE[dtype], msg=k)


@pytest.mark.parametrize("backend", ["torch"] + GPU_BACKENDS)
def test_same_noise_on_cpu_and_gpu(backend):
    require_backend(backend)
    n = 1 << 16
    cpu = torch.zeros(n)
    ops.sgld_step_(cpu, torch.zeros(n), step_size=0.0, noise_std=1.0, generator=ops.PhiloxGenerator(9))
    dev = torch.zeros(n, device="cuda")
    with ops.use_backend(backend):
        ops.sgld_step_(dev, torch.zeros_like(dev), step_size=0.0, noise_std=1.0,
                       generator=ops.PhiloxGenerator(9, device="cuda"))
    assert (dev.cpu() - cpu).abs().max() <= philox.NOISE_ATOL


def _steps(x, g, gen, k=3):
    for _ in range(k):
        ops.sgld_step_(x, g, step_size=0.05, noise_std=0.1, clamp=(-1.0, 1.0), generator=gen)
    ops.pgd_init_(g, x, eps=0.1, clamp=None, generator=gen)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_cuda_graph_replay_draws_fresh_noise(backend):
    require_backend(backend)
    with ops.use_backend(backend):
        x0 = torch.rand(8, 3, 16, 16, device="cuda")
        x, g = x0.clone(), torch.randn_like(x0)
        g0 = g.clone()
        gen = ops.PhiloxGenerator(1, device="cuda")
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # warm-up (compiles kernels) off the capture
            _steps(x, g, gen)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            _steps(x, g, gen)
        gen.manual_seed(1)
        replays = []
        for _ in range(2):
            x.copy_(x0)
            g.copy_(g0)
            graph.replay()
            replays.append((x.clone(), g.clone()))
        eager = []
        gen_e = ops.PhiloxGenerator(1, device="cuda")
        for _ in range(2):
            xe, ge = x0.clone(), g0.clone()
            _steps(xe, ge, gen_e)
            eager.append((xe, ge))
        torch.cuda.synchronize()
        assert gen.offset == gen_e.offset == 2 * 4 * ((x0.numel() + 3) // 4)   # 3 sgld + 1 linf init a round
        for (rx, rg), (ex, eg) in zip(replays, eager):
            assert_bitwise(rx, ex)
            assert_bitwise(rg, eg)
        assert not torch.equal(replays[0][0], replays[1][0])


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_compile_on_gpu_without_graph_break(backend):
    require_backend(backend)
    torch._dynamo.reset()

    def loop(x, g, gen):
        _steps(x, g, gen)
        return x, g

    with ops.use_backend(backend):
        x0, g0 = torch.rand(4, 3, 8, 8, device="cuda"), torch.randn(4, 3, 8, 8, device="cuda")
        eager = loop(x0.clone(), g0.clone(), ops.PhiloxGenerator(2, device="cuda"))
        compiled = torch.compile(loop, fullgraph=True)(x0.clone(), g0.clone(),
                                                       ops.PhiloxGenerator(2, device="cuda"))
    for a, b in zip(eager, compiled):
        assert_bitwise(a, b)
