"""Bad input raises TypeError or ValueError naming the argument, and writes nothing."""
import pytest
import torch

from ebjdat import ops
from ebjdat.ops import registry
from ebjdat.ops.registry import REQUIRED, Clamp, Generator, Like, Mask, Norm, PerSample, Real, Target

X = lambda: torch.rand(2, 3, 4, 4)  # noqa: E731
SHAPE = (2, 3, 4, 4)
NAN, INF = float("nan"), float("inf")


def make(shape, dtype, fill):
    if fill == "mask":
        return torch.zeros(shape, dtype=torch.bool)
    t = torch.rand(shape) if fill == "uniform" else torch.randn(shape)
    return t.to(dtype)


def bad_values(op):
    """(argument, bad value, exception, message) for every argument of op, by its kind
    (registry.py): what the public op must refuse, naming the argument."""
    out = []
    first_sample = True
    for a in op.args:
        n = a.name
        if isinstance(a, Target):
            out += [(n, torch.zeros(SHAPE, dtype=torch.int64), TypeError, f"{n} must be"),
                    (n, torch.zeros(SHAPE, dtype=torch.complex64), TypeError, f"{n} must be"),
                    (n, [1.0, 2.0], TypeError, f"{n} must be a torch.Tensor"),
                    (n, torch.zeros(1, *SHAPE[1:]).expand(SHAPE), ValueError, f"{n} has overlapping")]
        elif isinstance(a, Like):
            out += [(n, torch.rand(2, 3), ValueError, f"{n} has shape"),
                    (n, torch.zeros(SHAPE, dtype=torch.int32), TypeError, f"{n} must be"),
                    (n, torch.empty(SHAPE, device="meta"), ValueError, f"{n} is on meta")]
            if a.same_dtype:
                out.append((n, torch.rand(SHAPE, dtype=torch.float64), TypeError, f"{n} has dtype"))
        elif isinstance(a, PerSample):
            out += [(n, torch.randn(3), ValueError, f"{n} has shape"),
                    (n, torch.zeros(2, dtype=torch.int64), TypeError, f"{n} must be"),
                    (n, torch.empty(2, device="meta"), ValueError, f"{n} is on meta")]
            if not first_sample:
                out.append((n, torch.randn(2, dtype=torch.float64), TypeError, f"{n} has dtype"))
            first_sample = False
        elif isinstance(a, Mask):
            out += [(n, torch.zeros(2), TypeError, f"{n} must be a bool tensor"),
                    (n, torch.zeros(3, dtype=torch.bool), ValueError, f"{n} has shape"),
                    (n, [True, False], TypeError, f"{n} must be a torch.Tensor"),
                    (n, torch.zeros(1, dtype=torch.bool).expand(2), ValueError, f"{n} has overlapping")]
        elif isinstance(a, Real):
            out += [(n, -1.0, ValueError, f"{n} must be >= 0"), (n, NAN, ValueError, f"{n} must be finite"),
                    (n, INF, ValueError, f"{n} must be finite"), (n, -INF, ValueError, f"{n} must be finite"),
                    (n, "0.1", TypeError, f"{n} must be a real number"),
                    (n, True, TypeError, f"{n} must be a real number")]
            if a.none is REQUIRED:
                out.append((n, None, TypeError, f"{n} must be a real number"))
        elif isinstance(a, Clamp):
            out += [(n, (1.0, -1.0), ValueError, "clamp range is empty"),
                    (n, (0.0,), TypeError, "clamp must be None or a"),
                    (n, (0.0, NAN), TypeError, r"clamp\[1\]")]
        elif isinstance(a, Norm):
            out += [(n, "l3", ValueError, "norm must be one of"), (n, None, ValueError, "norm must be one of")]
        elif isinstance(a, Generator):
            out += [(n, torch.Generator(), TypeError, "generator must be"),
                    (n, ops.PhiloxGenerator(0, device="meta"), ValueError, "generator is on meta")]
    return out


BAD = [(op, *bad) for op in registry.ops() for bad in bad_values(op)]


def _call(op, over):
    """The public op at its first bench setting, one argument replaced; returns the call
    and what must stay unchanged if it raises (the written tensors, the generator)."""
    tensors = op.make_tensors(SHAPE, torch.float32, make)
    kwargs = dict(op.bench[0].kwargs)
    if op.generator is not None:
        kwargs["generator"] = ops.PhiloxGenerator(3)
    name, value = over
    if name in tensors:
        tensors[name] = value
    else:
        kwargs[name] = value
    kept = [tensors[a.name] for a in op.mutated if isinstance(tensors[a.name], torch.Tensor)]
    if isinstance(kwargs.get("generator"), ops.PhiloxGenerator) and kwargs["generator"].device.type == "cpu":
        kept.append(kwargs["generator"].state)
    return (lambda: getattr(ops, op.public_name)(*tensors.values(), **kwargs)), kept


@pytest.mark.parametrize("op,arg,value,exc,match", BAD,
                         ids=[f"{op.name}-{arg}-{i}" for i, (op, arg, *_) in enumerate(BAD)])
def test_bad_input_raises_and_writes_nothing(op, arg, value, exc, match):
    call, kept = _call(op, (arg, value))
    before = [t.clone() for t in kept]
    with pytest.raises(exc, match=match):
        call()
    for t, b in zip(kept, before):
        assert torch.equal(t, b)


def test_every_argument_of_every_op_has_bad_cases():
    """The bad-input cases come from the registry: each op's every argument is covered."""
    for op in registry.ops():
        assert {a.name for a in op.args} == {arg for o, arg, *_ in BAD if o is op}, op.name


def test_l2_needs_a_batch_dimension():
    with pytest.raises(ValueError, match="x_adv must have a batch dimension"):
        ops.pgd_step_(torch.tensor(0.5), torch.tensor(1.0), torch.tensor(0.5), alpha=0.1, eps=0.1, norm="l2")


def test_scalars_that_are_not_floats_are_converted():
    """ints, numpy floats and lists pass the checks as floats (the fast paths take floats only)."""
    import numpy as np
    x, g, xo = torch.full((5,), 0.5), torch.ones(5), torch.full((5,), 0.5)
    ops.sgld_step_(x, g, step_size=np.float32(0.25), grad_clip=1, clamp=[0, 1])
    assert torch.equal(x, torch.full((5,), 0.75))
    ops.pgd_step_(x, -g, xo, alpha=1, eps=np.float64(0.125), clamp=[0, 1])
    assert torch.equal(x, torch.full((5,), 0.375))


def test_generator_on_another_device():
    gen = ops.PhiloxGenerator(0, device="meta")
    x = X()
    with pytest.raises(ValueError, match="generator is on meta"):
        ops.sgld_step_(x, X(), step_size=0.1, noise_std=1.0, generator=gen)
    with pytest.raises(ValueError, match="generator is on meta"):
        ops.pgd_init_(x, X(), eps=0.1, generator=gen)


def test_tensor_on_another_device():
    x = X()
    with pytest.raises(ValueError, match="grad is on meta"):
        ops.sgld_step_(x, torch.empty(2, 3, 4, 4, device="meta"), step_size=0.1)


def test_bad_generator_seed_and_state():
    with pytest.raises(TypeError, match="seed must be an int"):
        ops.PhiloxGenerator(1.5)
    with pytest.raises(ValueError, match="state must be"):
        ops.PhiloxGenerator(1).set_state(torch.zeros(2))


def test_generator_seed_range():
    """Seeds are 64-bit: others would silently equal another seed (2**70 was seed 0)."""
    for bad in (2**64, 2**70, -1):
        with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\)"):
            ops.PhiloxGenerator(bad)
        with pytest.raises(ValueError, match="seed must be in"):
            ops.PhiloxGenerator(0).manual_seed(bad)
    for bad in (True, 1.0, "3", None):
        with pytest.raises(TypeError, match="seed must be an int"):
            ops.PhiloxGenerator(bad)
    assert ops.PhiloxGenerator(2**64 - 1).seed == 2**64 - 1
    import numpy as np
    assert ops.PhiloxGenerator(np.int64(5)).seed == 5
    gen = ops.PhiloxGenerator(1)
    state = gen.get_state()
    for bad in (-1, 2**62 + 1):
        state[1] = bad
        with pytest.raises(ValueError, match=r"offset \(state\[1\]\) must be in \[0, 2\*\*62\]"):
            gen.set_state(state)
    assert gen.offset == 0


def _inplace_calls():
    """(name, op(target) -> None) for each registered op, on a (2, 3, 4, 4) target, its
    other tensors fixed, a fresh generator each call."""
    out = []
    g = torch.Generator().manual_seed(1)
    for op in registry.ops():
        def fixed(shape, dtype, fill):
            if fill == "mask":
                return torch.zeros(shape, dtype=torch.bool)
            return (torch.rand(shape, generator=g) if fill == "uniform" else torch.randn(shape, generator=g)).to(dtype)
        tensors = op.make_tensors(SHAPE, torch.float32, fixed)
        others = [tensors[a.name] for a in op.tensors[1:]]
        kwargs = dict(op.bench[0].kwargs)

        def call(x, op=op, others=others, kwargs=kwargs):
            gen = {"generator": ops.PhiloxGenerator(3)} if op.generator else {}
            getattr(ops, op.public_name)(x, *others, **kwargs, **gen)
        out.append((op.public_name, call))
    return out


def test_leaf_that_requires_grad_is_refused_alike(backend):
    """Every backend raises torch's in-place-on-a-leaf error, before writing, while grad
    mode is on; a non-leaf that requires grad too (its history would be stale). Under
    torch.no_grad() in-place on a leaf is legal, as in torch, on both call paths (plain
    eager, and through the dispatcher: a torch-function mode routes the call there)."""
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    class Seen(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    class Through(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    for name, call in _inplace_calls():
        x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        before = x.detach().clone()
        with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an "
                                               r"in-place operation.*x(_adv|_prop)?\.detach\(\).*torch\.no_grad"):
            call(x)
        assert torch.equal(x.detach(), before) and x.grad_fn is None, name
        nonleaf = x * 1
        with pytest.raises(RuntimeError, match=r"requires grad \(it is computed from tensors that do\)"):
            call(nonleaf)
        assert torch.equal(nonleaf.detach(), before), name
        want = before.clone()
        call(want)                                    # a plain tensor: the expected result
        assert not torch.equal(want, before), name
        with torch.no_grad():
            call(x)                                   # plain eager path
        torch.testing.assert_close(x.detach(), want, rtol=0, atol=0)
        y = before.clone().requires_grad_(True)
        with torch.no_grad(), Through(), Seen() as seen:
            call(y)                                   # through the dispatcher
        assert f"ebjdat.{name}.default" in seen.ops
        torch.testing.assert_close(y.detach(), want, rtol=0, atol=0)


def test_extension_entries_refuse_bad_arguments():
    """ebjdat._C's op entries (CPython fastcall functions) name the function and the
    argument position on a wrong count or type, and raise the C++ checks' ValueError."""
    from ebjdat.ops import cuda
    if cuda.load_error() is not None:
        pytest.skip(cuda.load_error())
    import ebjdat._C as C
    x = torch.zeros(4)
    # x, grad, state, n, grad_count, state_count, x_dtype, grad_dtype, step_size, ..., threads
    good = [x.data_ptr(), x.data_ptr(), 0, 4, 4, 0, 0, 0, 0.1, 0.0, 1.0, 0.0, 1.0, 0, 0, 0, 1]
    C.sgld_step_host(*good)
    with pytest.raises(TypeError, match=r"sgld_step_host takes 17 positional arguments, got 2"):
        C.sgld_step_host(1, 2)
    with pytest.raises(TypeError, match=r"sgld_step_host: argument 9 must be a float, got str"):
        C.sgld_step_host(*good[:8], "0.1", *good[9:])
    with pytest.raises(TypeError, match=r"argument 1 must be an int, got float"):
        C.sgld_step_host(1.0, *good[1:])
    with pytest.raises(OverflowError, match=r"argument 7 is out of range"):
        C.sgld_step_host(*good[:6], 2**40, *good[7:])
    with pytest.raises(ValueError, match="x: unknown dtype code 7"):
        C.sgld_step_host(*good[:6], 7, *good[7:])
    with pytest.raises(ValueError, match="grad: null data pointer"):
        C.sgld_step_host(good[0], 0, *good[2:])
    for threads in (0, 4097):
        with pytest.raises(ValueError, match=r"threads must be in \[1, 4096\]"):
            C.sgld_step_host(*good[:-1], threads)
    with pytest.raises(ValueError, match="batch"):
        C.pgd_step_host(x.data_ptr(), x.data_ptr(), x.data_ptr(), 4, 4, 4, 3, 0, 0, 0.1, True, 0.1, True, 0.0,
                        1.0, 1)
    # the device entries take the host entries' arguments less threads, plus (scratch,
    # scratch_count for pgd,) device, stream; their checks run before anything touches a GPU
    with pytest.raises(ValueError, match="x: null data pointer"):
        C.sgld_step(0, *good[1:-1], 0, 0)
    with pytest.raises(ValueError, match="x: null data pointer"):
        C.pgd_step(0, 0, 0, 4, 4, 4, 1, 0, 0, 0.1, True, 0.1, False, 0.0, 1.0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="x: null data pointer"):
        C.pgd_init(0, 0, 0, 4, 4, 3, 1, 0, 0.1, False, 0.0, 1.0, 0, 0, 0, 0, 0, 0, 0)
    assert torch.equal(x, torch.zeros(4))


def test_mala_entries_check_every_count_and_dtype_first():
    """The MALA entries take every tensor's element count and dtype and check them
    before touching memory: a mismatch is a ValueError naming the tensor, on the host and
    the device entry alike (no GPU is touched before the checks)."""
    from ebjdat.ops import cuda
    if cuda.load_error() is not None:
        pytest.skip(cuda.load_error())
    import ebjdat._C as C
    x, e, acc, st = torch.zeros(2, 3), torch.zeros(2), torch.zeros(2, dtype=torch.bool), ops.PhiloxGenerator(0).state
    p, q = x.data_ptr(), e.data_ptr()
    prop = [p, p, p, st.data_ptr(), 6, 6, 6, 3, 0, 0, 0, 0.1, 0, 0, 0]
    C.mala_propose_host(*prop, 1)
    for i, value, match in [(5, 5, "x has 5 elements, expected 6"), (6, 7, "grad has 7 elements, expected 6"),
                            (7, 1, "state has 1 elements, expected 3"),
                            (9, 3, "x: dtype code 3, expected 0"), (11, -0.1, "step_size must be finite"),
                            (3, 0, "state: null data pointer"), (12, 4, "layout")]:
        for entry, tail in ((C.mala_propose_host, [1]), (C.mala_propose, [0, 0])):   # threads; device, stream
            with pytest.raises(ValueError, match=match):
                entry(*prop[:i], value, *prop[i + 1:], *tail)
    acc_args = [p, p, q, q, q, q, acc.data_ptr(), st.data_ptr(), 6, 6, 2, 2, 2, 2, 2, 2, 3, 0, 0, 0, 0, 0, 0]
    C.mala_accept_host(*acc_args)
    for i, value, match in [(9, 5, "x_prop has 5 elements, expected 6"), (10, 4, "batch"),
                            (12, 3, "energy_prop has 3 elements, expected 2"),
                            (15, 1, "accepted has 1 elements, expected 2"), (16, 2, "state has 2 elements"),
                            (18, 3, "x_prop: dtype code 3, expected 0"),
                            (22, 3, "log_q_rev: dtype code 3, expected 0"), (6, 0, "accepted: null data pointer")]:
        for entry, tail in ((C.mala_accept_host, []), (C.mala_accept, [0, 0])):
            with pytest.raises(ValueError, match=match):
                entry(*acc_args[:i], value, *acc_args[i + 1:], *tail)
    with pytest.raises(TypeError, match="mala_accept_host takes 23 positional arguments, got 2"):
        C.mala_accept_host(1, 2)
