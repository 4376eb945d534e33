"""The custom-op contract: opcheck, backend selection, torch.compile without graph breaks."""
import pytest
import torch

from ebjdat import ops

from .conftest import BACKENDS, require_backend

INF = float("inf")


def _samples(backend):
    x = torch.rand(4, 3, 5, 7)
    g = torch.randn(4, 3, 5, 7)
    xo = torch.rand(4, 3, 5, 7)
    st = ops.PhiloxGenerator(3).state
    return [
        (torch.ops.ebjdat.sgld_step_.default, (x.clone(), g, st.clone(), 0.1, 0.5, 1.0, -1.0, 1.0, backend)),
        (torch.ops.ebjdat.sgld_step_.default, (x.clone(), g, None, 0.1, 0.0, INF, -INF, INF, backend)),
        (torch.ops.ebjdat.pgd_step_.default, (x.clone(), g, xo, 0.1, 0.2, "linf", 0.0, 1.0, backend)),
        (torch.ops.ebjdat.pgd_step_.default, (x.clone(), g, xo, 0.1, None, "l2", 0.0, 1.0, backend)),
        (torch.ops.ebjdat.pgd_init_.default, (x.clone(), xo, st.clone(), 0.1, "linf", 0.0, 1.0, backend)),
        (torch.ops.ebjdat.pgd_init_.default, (x.clone(), xo, st.clone(), 0.1, "l2", 0.0, 1.0, backend)),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    require_backend(backend)
    for op, args in _samples(backend):
        torch.library.opcheck(op, args)


def test_backend_selection():
    assert "torch" in ops.available_backends()
    assert ops.get_backend() == "auto"
    with ops.use_backend("torch"):
        assert ops.get_backend() == "torch"
    assert ops.get_backend() == "auto"
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.set_backend("tpu")
    from ebjdat.ops.backends import resolve
    assert resolve("auto", torch.zeros(1)).__name__ == "ebjdat.ops.spec"


def test_unavailable_backend_is_a_clear_error(monkeypatch):
    from ebjdat.ops import cuda
    monkeypatch.setattr(cuda, "load_error", lambda: "ebjdat._C is not built")
    with pytest.raises(RuntimeError, match="backend 'cuda' is not available: ebjdat._C is not built"):
        ops.set_backend("cuda")
    assert "cuda" not in ops.available_backends()


def _loop(x, g, xo, gen):
    for _ in range(3):
        ops.sgld_step_(x, g, step_size=0.1, noise_std=0.01, grad_clip=1.0, clamp=(-1.0, 1.0), generator=gen)
    ops.pgd_init_(xo, x, eps=0.1, generator=gen)
    ops.pgd_step_(xo, g, x, alpha=0.01, eps=0.1)
    return x, xo


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_without_graph_break(backend):
    """fullgraph=True fails on any graph break; the compiled loop equals the eager one."""
    require_backend(backend)
    torch._dynamo.reset()
    def args():
        g = torch.Generator().manual_seed(0)
        return (torch.rand(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g),
                torch.zeros(2, 3, 4, 4), ops.PhiloxGenerator(5))

    with ops.use_backend(backend):
        eager = _loop(*args())
        compiled = torch.compile(_loop, fullgraph=True, backend="aot_eager")(*args())
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_layouts(backend):
    """x contiguous or channels_last while grad / x_orig have other strides: the same result
    as all-contiguous tensors, x keeps its own strides."""
    require_backend(backend)
    g0 = torch.Generator().manual_seed(0)
    x0, g, xo = (torch.rand(3, 4, 5, 6, generator=g0) for _ in range(3))
    ref = x0.clone()
    with ops.use_backend(backend):
        ops.pgd_step_(ref, g, xo, alpha=0.1, eps=0.2)
        ops.sgld_step_(ref, g, step_size=0.1, noise_std=0.1, generator=ops.PhiloxGenerator(1))
        g_cl = g.contiguous(memory_format=torch.channels_last)
        xo_t = xo.transpose(2, 3).contiguous().transpose(2, 3)   # dense, neither layout
        g_p = g.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
        for fmt in (torch.contiguous_format, torch.channels_last):
            x = x0.clone(memory_format=fmt)
            strides = x.stride()
            ops.pgd_step_(x, g_cl, xo_t, alpha=0.1, eps=0.2)
            ops.sgld_step_(x, g_p, step_size=0.1, noise_std=0.1, generator=ops.PhiloxGenerator(1))
            assert x.stride() == strides
            torch.testing.assert_close(x, ref, rtol=0, atol=0)


def test_traced_calls_go_through_the_dispatcher():
    """Plain eager calls skip the dispatcher; a dispatch mode (make_fx, export, fake
    tensors) sees the registered op, so tracing records it."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    x, g = torch.zeros(4), torch.ones(4)
    ops.sgld_step_(x, g, step_size=1.0)
    with Record():
        ops.sgld_step_(x, g, step_size=1.0)
    assert seen == ["ebjdat.sgld_step_.default"]
    assert torch.equal(x, torch.full((4,), 2.0))


def test_backend_resolution_is_decided_once_per_selection_and_device(monkeypatch):
    """The launch path decides the backend module once per (selection, device) and then
    looks it up; a refusal (triton on CPU tensors without the interpreter) is never
    cached."""
    from ebjdat.ops import backends
    monkeypatch.setattr(backends, "_RESOLVED", {name: {} for name in backends.NAMES})
    decided = []
    decide = backends._decide
    monkeypatch.setattr(backends, "_decide", lambda name, x: decided.append(name) or decide(name, x))
    x = torch.zeros(3)
    mods = [backends.resolve("auto", x) for _ in range(3)] + [backends.resolve("torch", x)]
    assert decided == ["auto", "torch"] and all(m.__name__ == "ebjdat.ops.spec" for m in mods)
    monkeypatch.setattr(backends, "interpreting", lambda: False)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            backends.resolve("triton", x)
    assert decided == ["auto", "torch", "triton", "triton"]


def test_backend_name_through_torch_ops_is_checked():
    """torch.ops.ebjdat.* take the backend as a string; a wrong one is a ValueError that
    names the choices (ebjdat.ops passes a checked name)."""
    x, g = torch.zeros(3), torch.ones(3)
    with pytest.raises(ValueError, match=r"backend must be one of .*'tpu'"):
        torch.ops.ebjdat.sgld_step_(x, g, None, 0.1, 0.0, INF, -INF, INF, "tpu")
    assert torch.equal(x, torch.zeros(3))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0,), (0, 3, 4, 4), (3, 0)])
def test_empty_tensors_are_left_alone(backend, shape):
    """Tensors without elements (an empty batch, or samples of no elements) run every op
    as a no-op, on every backend and for both norms, and draw no noise."""
    require_backend(backend)
    x, xo, g = torch.zeros(shape), torch.zeros(shape), torch.ones(shape)
    gen = ops.PhiloxGenerator(0)
    with ops.use_backend(backend):
        ops.sgld_step_(x, g, step_size=0.1, noise_std=0.1, generator=gen)
        for norm in ("linf", "l2"):
            ops.pgd_step_(x, g, xo, alpha=0.1, eps=0.1, norm=norm)
            ops.pgd_init_(x, xo, eps=0.1, norm=norm, generator=gen)
    assert x.shape == shape and gen.offset == 0


def test_device_launch_passes_the_device_index_and_its_raw_current_stream(monkeypatch):
    """The cuda backend's device launches append x's device index and that device's
    current stream as a raw cudaStream_t (what torch.cuda.current_stream(x.device)
    .cuda_stream gives, without building a Stream): checked here with a stand-in tensor
    and extension; test_ops_gpu runs the real launches, in CUDA-graph capture too."""
    from types import SimpleNamespace

    from ebjdat.ops import cuda
    calls = []
    fake_ext = SimpleNamespace(has_device_code=lambda: True, sgld_step=lambda *a: calls.append(a))
    monkeypatch.setattr(cuda, "_ext", fake_ext)
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda index: 1000 + index, raising=False)
    x = SimpleNamespace(is_cuda=True, get_device=lambda: 3)
    cuda._launch("sgld_step", x, (11, 12))
    assert calls == [(11, 12, 3, 1003)]
    monkeypatch.setattr(fake_ext, "has_device_code", lambda: False)
    with pytest.raises(RuntimeError, match="built without device code"):
        cuda._launch("sgld_step", x, (11, 12))
    with pytest.raises(RuntimeError, match="does not run on cpu tensors"):
        cuda._launch("sgld_step", torch.zeros(1), (11, 12))
