"""Bad input raises TypeError or ValueError naming the argument, and writes nothing."""
import pytest
import torch

from ebjdat import ops

X = lambda: torch.rand(2, 3, 4, 4)  # noqa: E731


def _sgld(**over):
    kw = dict(x=X(), grad=X(), step_size=0.1, noise_std=0.1)
    kw.update(over)
    x = kw.pop("x")
    return ops.sgld_step_, (x, kw.pop("grad")), kw, x


def _step(**over):
    kw = dict(x_adv=X(), grad=X(), x_orig=X(), alpha=0.1, eps=0.1)
    kw.update(over)
    x = kw.pop("x_adv")
    return ops.pgd_step_, (x, kw.pop("grad"), kw.pop("x_orig")), kw, x


def _init(**over):
    kw = dict(x_adv=X(), x_orig=X(), eps=0.1)
    kw.update(over)
    x = kw.pop("x_adv")
    return ops.pgd_init_, (x, kw.pop("x_orig")), kw, x


BAD = [
    (_sgld, dict(x=torch.zeros(2, 3, dtype=torch.int64)), TypeError, "x must be"),
    (_sgld, dict(x=torch.zeros(2, dtype=torch.complex64)), TypeError, "x must be"),
    (_sgld, dict(x=[1.0, 2.0]), TypeError, "x must be a torch.Tensor"),
    (_sgld, dict(grad=torch.rand(2, 3)), ValueError, "grad has shape"),
    (_sgld, dict(grad=torch.zeros(2, 3, 4, 4, dtype=torch.int32)), TypeError, "grad must be"),
    (_sgld, dict(step_size=-1.0), ValueError, "step_size must be >= 0"),
    (_sgld, dict(step_size=float("nan")), ValueError, "step_size must be finite"),
    (_sgld, dict(step_size="0.1"), TypeError, "step_size must be a real number"),
    (_sgld, dict(noise_std=-0.1), ValueError, "noise_std"),
    (_sgld, dict(grad_clip=-1.0), ValueError, "grad_clip"),
    (_sgld, dict(clamp=(1.0, -1.0)), ValueError, "clamp range is empty"),
    (_sgld, dict(clamp=(0.0,)), TypeError, "clamp must be None or a"),
    (_sgld, dict(clamp=(0.0, float("nan"))), TypeError, r"clamp\[1\]"),
    (_sgld, dict(generator=torch.Generator()), TypeError, "generator must be"),
    (_sgld, dict(x=torch.zeros(3).expand(2, 3), grad=torch.zeros(2, 3)), ValueError, "x has overlapping"),
    (_step, dict(norm="l3"), ValueError, "norm must be one of"),
    (_step, dict(eps=-0.1), ValueError, "eps must be >= 0"),
    (_step, dict(alpha=-0.1), ValueError, "alpha must be >= 0"),
    (_step, dict(x_orig=X().double()), TypeError, "x_orig has dtype"),
    (_step, dict(x_orig=torch.rand(2, 3)), ValueError, "x_orig has shape"),
    (_step, dict(grad=torch.rand(1, 3, 4, 4)), ValueError, "grad has shape"),
    (_step, dict(clamp=(1.0, 0.0)), ValueError, "clamp range is empty"),
    (_step, dict(x_adv=torch.tensor(0.5), grad=torch.tensor(1.0), x_orig=torch.tensor(0.5), norm="l2"),
     ValueError, "batch dimension"),
    (_init, dict(eps=None), TypeError, "eps must be a real number"),
    (_init, dict(eps=-1.0), ValueError, "eps must be >= 0"),
    (_init, dict(norm="linf2"), ValueError, "norm must be one of"),
    (_init, dict(x_orig=torch.zeros(2, 3, 4, 4, dtype=torch.uint8)), TypeError, "x_orig must be"),
    # past the one-expression fast paths (ops.checks.target, the inline scalar tests)
    (_sgld, dict(step_size=float("inf")), ValueError, "step_size must be finite"),
    (_sgld, dict(noise_std=True), TypeError, "noise_std must be a real number"),
    (_step, dict(alpha=float("-inf")), ValueError, "alpha must be finite"),
    (_step, dict(eps=float("inf")), ValueError, "eps must be finite"),
    (_step, dict(grad=torch.zeros(2, 3, 4, 4, dtype=torch.int64)), TypeError, "grad must be"),
    (_step, dict(grad=torch.empty(2, 3, 4, 4, device="meta")), ValueError, "grad is on meta"),
    (_step, dict(x_adv=torch.zeros(3).expand(2, 3), grad=torch.zeros(2, 3), x_orig=torch.zeros(2, 3)),
     ValueError, "x_adv has overlapping"),
]


def test_scalars_that_are_not_floats_are_converted():
    """ints, numpy floats and lists pass the checks as floats (the fast paths take floats only)."""
    import numpy as np
    x, g, xo = torch.full((5,), 0.5), torch.ones(5), torch.full((5,), 0.5)
    ops.sgld_step_(x, g, step_size=np.float32(0.25), grad_clip=1, clamp=[0, 1])
    assert torch.equal(x, torch.full((5,), 0.75))
    ops.pgd_step_(x, -g, xo, alpha=1, eps=np.float64(0.125), clamp=[0, 1])
    assert torch.equal(x, torch.full((5,), 0.375))


@pytest.mark.parametrize("make,over,exc,match", BAD, ids=lambda v: getattr(v, "__name__", None))
def test_bad_input_raises_and_writes_nothing(make, over, exc, match):
    fn, args, kw, x = make(**over)
    before = x.clone() if isinstance(x, torch.Tensor) else None
    with pytest.raises(exc, match=match):
        fn(*args, **kw)
    if before is not None:
        assert torch.equal(x, before)


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
    state[1] = -1
    with pytest.raises(ValueError, match=r"offset \(state\[1\]\) must be >= 0"):
        gen.set_state(state)
    assert gen.offset == 0


def _inplace_calls():
    """(name, op(x) -> None) for each op, on a (2, 3, 4, 4) x."""
    g, xo = torch.linspace(-1, 1, 96).view(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    return [
        ("sgld_step_", lambda x: ops.sgld_step_(x, g, step_size=0.1, noise_std=0.1,
                                                generator=ops.PhiloxGenerator(3))),
        ("pgd_step_", lambda x: ops.pgd_step_(x, g, xo, alpha=0.1, eps=0.2)),
        ("pgd_init_", lambda x: ops.pgd_init_(x, xo, eps=0.1, generator=ops.PhiloxGenerator(3))),
    ]


def test_leaf_that_requires_grad_is_refused_alike(backend):
    """Every backend raises torch's in-place-on-a-leaf error, before writing, while grad
    mode is on; a non-leaf that requires grad too (its history would be stale). Under
    torch.no_grad() in-place on a leaf is legal, as in torch, on both call paths (plain
    eager and through the dispatcher)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Seen(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    for name, call in _inplace_calls():
        x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        before = x.detach().clone()
        with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an "
                                               r"in-place operation.*x(_adv)?\.detach\(\).*torch\.no_grad"):
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
        with torch.no_grad(), Seen() as seen:
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
    good = [x.data_ptr(), x.data_ptr(), 0, 4, 0, 0, 0.1, 0.0, 1.0, 0.0, 1.0, 0, 0, 0]
    C.sgld_step_host(*good)
    with pytest.raises(TypeError, match=r"sgld_step_host takes 14 positional arguments, got 2"):
        C.sgld_step_host(1, 2)
    with pytest.raises(TypeError, match=r"sgld_step_host: argument 7 must be a float, got str"):
        C.sgld_step_host(*good[:6], "0.1", *good[7:])
    with pytest.raises(TypeError, match=r"argument 1 must be an int, got float"):
        C.sgld_step_host(1.0, *good[1:])
    with pytest.raises(OverflowError, match=r"argument 5 is out of range"):
        C.sgld_step_host(*good[:4], 2**40, *good[5:])
    with pytest.raises(ValueError, match="x: unknown dtype code 7"):
        C.sgld_step_host(*good[:4], 7, *good[5:])
    with pytest.raises(ValueError, match="grad: null data pointer"):
        C.sgld_step_host(good[0], 0, *good[2:])
    with pytest.raises(ValueError, match="batch"):
        C.pgd_step_host(x.data_ptr(), x.data_ptr(), x.data_ptr(), 4, 3, 0, 0, 0.1, True, 0.1, True, 0.0, 1.0)
    # the device entries take the host entries' arguments plus (scratch, scratch_count for
    # pgd,) device, stream; their checks run before anything touches a GPU
    with pytest.raises(ValueError, match="x: null data pointer"):
        C.sgld_step(0, *good[1:], 0, 0)
    with pytest.raises(ValueError, match="x: null data pointer"):
        C.pgd_step(0, 0, 0, 4, 1, 0, 0, 0.1, True, 0.1, False, 0.0, 1.0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="x: null data pointer"):
        C.pgd_init(0, 0, 0, 4, 1, 0, 0.1, False, 0.0, 1.0, 0, 0, 0, 0, 0, 0, 0)
    assert torch.equal(x, torch.zeros(4))
