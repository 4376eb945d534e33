"""The custom-op contract, for every registered op: opcheck, backend selection,
torch.compile without graph breaks, the plain-eager shortcut asked with public API."""
import pytest
import torch

from ebjdat import ops
from ebjdat.ops import registry

from .conftest import BACKENDS, require_backend

INF = float("inf")
SHAPE = (4, 3, 5, 7)


def make(shape, dtype, fill, _g=torch.Generator().manual_seed(0)):
    """A tensor for an op's argument: uniform or normal values, or a zeroed mask."""
    if fill == "mask":
        return torch.zeros(shape, dtype=torch.bool)
    t = torch.rand(shape, generator=_g) if fill == "uniform" else torch.randn(shape, generator=_g)
    return t.to(dtype)


def _samples(backend):
    """(op, torch.ops overload, schema arguments) of every registered op at each of its
    variants (the settings its kernels specialise on)."""
    out = []
    for op in registry.ops():
        for v in op.variants:
            tensors = op.make_tensors(SHAPE, torch.float32, make)
            args = op.lower(tensors, v.kwargs, ops.PhiloxGenerator(3).state)
            out.append((op, getattr(torch.ops.ebjdat, op.public_name).default, args + (backend,)))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    require_backend(backend)
    samples = _samples(backend)
    assert {op.name for op, _, _ in samples} == {op.name for op in registry.ops()}
    for _, op, args in samples:
        torch.library.opcheck(op, args)


def test_registry_describes_every_layer():
    """Each registered op has its public op, prechecked entry, torch.library schema and a
    function in every backend, all under its one name."""
    from ebjdat.ops import backends, prechecked
    assert ops.OPS == tuple(op.public_name for op in registry.ops())
    assert {"sgld_step_", "pgd_step_", "pgd_init_", "mala_propose_", "mala_accept_"} <= set(ops.OPS)
    for op in registry.ops():
        assert getattr(ops, op.public_name).__doc__ == op.doc and op.public_name in ops.__all__
        assert callable(getattr(prechecked, op.public_name))
        assert str(getattr(torch.ops.ebjdat, op.public_name).default._schema) == f"ebjdat::{op.schema()}"
        for name in ("torch", "triton", "cuda", "cpu"):
            if name in ops.available_backends():
                assert callable(getattr(backends.table(name), op.name))
    with pytest.raises(KeyError, match="no op 'nope'"):
        registry.op("nope")
    for args in [(registry.Like("grad"),), (registry.Target("x"), registry.Like("shape")),
                 (registry.Target("x"), registry.Like("x")), (registry.Target("x"), registry.Target("y"))]:
        with pytest.raises(ValueError, match="Target|distinct identifiers"):
            registry.Op("bad", args=args, doc="", package=__name__)


def test_backend_selection():
    assert "torch" in ops.available_backends()
    assert ops.get_backend() == "auto"
    with ops.use_backend("torch"):
        assert ops.get_backend() == "torch"
    assert ops.get_backend() == "auto"
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.set_backend("tpu")
    from ebjdat.ops.backends import auto_choice, resolve
    # CPU tensors: the cpu backend where ebjdat._C is built, else the specification
    assert resolve("auto", torch.zeros(1)).name == ("cpu" if "cpu" in ops.available_backends() else "torch")
    assert auto_choice("cpu")[0] == resolve("auto", torch.zeros(1)).name


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
    """Plain eager calls skip the dispatcher; whatever traces or transforms the call goes
    through it, asked with public torch API only: make_fx (and export) record the
    registered op, a torch-function mode or a tensor subclass sees it, a compiled region
    traces it. A TorchDispatchMode alone is invisible to public API: it sees the op when
    called as torch.ops.ebjdat.*."""
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    class Through(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    x, g = torch.zeros(4), torch.ones(4)
    ops.sgld_step_(x, g, step_size=1.0)
    with Through(), Record():
        ops.sgld_step_(x, g, step_size=1.0)
    with Record():
        torch.ops.ebjdat.sgld_step_(x, g, None, 1.0, 0.0, INF, -INF, INF, "auto")
    assert seen == ["ebjdat.sgld_step_.default"] * 2
    assert torch.equal(x, torch.full((4,), 3.0))

    def step(t, grad):
        return ops.sgld_step_(t.clone(), grad, step_size=1.0)
    graph = make_fx(step)(torch.zeros(4), torch.ones(4))
    assert "ebjdat.sgld_step_" in str(graph.graph)


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
    auto = backends.auto_choice("cpu")[0]
    assert decided == ["auto", "torch"] and [m.name for m in mods] == [auto] * 3 + ["torch"]
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
    cuda.launch("sgld_step", x, (11, 12))
    assert calls == [(11, 12, 3, 1003)]
    monkeypatch.setattr(fake_ext, "has_device_code", lambda: False)
    with pytest.raises(RuntimeError, match="built without device code"):
        cuda.launch("sgld_step", x, (11, 12))
    with pytest.raises(RuntimeError, match="does not run on cpu tensors"):
        cuda.launch("sgld_step", torch.zeros(1), (11, 12))


def _public_call(op, tensors, kwargs, seed=5):
    """The public op on ``tensors`` (a dict, copied) at ``kwargs``; its written tensors."""
    ts = {k: v.clone() for k, v in tensors.items()}
    kw = dict(kwargs, generator=ops.PhiloxGenerator(seed)) if op.generator else dict(kwargs)
    getattr(ops, op.public_name)(*ts.values(), **kw)
    return [ts[a.name] for a in op.mutated]


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_op_compiles_without_graph_break(backend):
    """Each registered op at each of its variants, inside torch.compile(fullgraph=True),
    gives the eager result."""
    require_backend(backend)
    torch._dynamo.reset()
    with ops.use_backend(backend):
        for op in registry.ops():
            tensors = op.make_tensors((2, 3, 4, 4), torch.float32, make)
            for v in op.variants:
                torch._dynamo.reset()   # a graph per variant: no recompile limit
                eager = _public_call(op, tensors, v.kwargs)
                compiled = torch.compile(lambda t: _public_call(op, t, v.kwargs), fullgraph=True,
                                         backend="aot_eager")(tensors)
                for a, b in zip(eager, compiled):
                    torch.testing.assert_close(a, b, rtol=0, atol=0, msg=lambda m: f"{op.name} {v}: {m}")


def test_torch_ops_entries_check_their_tensors():
    """torch.ops.ebjdat.* are public: a tensor of the wrong shape or a bad state is a
    ValueError naming it before any backend reads memory (every backend would otherwise
    read out of bounds)."""
    for op in registry.ops():
        tensors = op.make_tensors(SHAPE, torch.float32, make)
        state = ops.PhiloxGenerator(3).state
        kwargs = op.variants[-1].kwargs
        second = op.tensors[1].name
        bad = dict(tensors, **{second: tensors[second][:1]})
        before = {k: v.clone() for k, v in tensors.items()}
        entry = getattr(torch.ops.ebjdat, op.public_name)
        with pytest.raises(ValueError, match=f"{second} has shape"):
            entry(*op.lower(bad, kwargs, state), "cuda")
        if op.generator is not None and op.generator.when is None:
            with pytest.raises(ValueError, match="state must be an int64 tensor"):
                entry(*op.lower(tensors, kwargs, torch.zeros(2, dtype=torch.int64)), "cuda")
        assert all(torch.equal(tensors[k], before[k]) for k in tensors), op.name
