"""The Python functions of an op, written from its registry record (registry.Op).

Each is Python source compiled once at import, so that a call costs what a hand-written
function costs: the checks are inline expressions (a common case in one expression, the
precise checks of ``checks.py`` only when it fails), the arguments are spelled out (no
``*args`` forwarding), and the helpers are bound names. ``source(op, kind)`` shows the text.

* ``public``: ``ebjdat.ops.<op>_``: checks every argument, returns its target.
* ``prechecked``: ``ebjdat.ops.prechecked.<op>_``: the schema's arguments, generator for
  state, no checks (the samplers and attacks check once per call).
* ``implementation``: the torch.library implementation: the backend, then its function on
  dense memory (library.py copies other layouts).
* ``checked``: the implementation registered with the dispatcher: ``torch.ops.ebjdat.*``
  are public, so the tensors' shapes, devices and dtypes and the state are checked first.

Both entries call the implementation directly in plain eager mode and the dispatcher
otherwise. Plain eager, asked with public torch API only: the target is a plain
``torch.Tensor`` (not a fake, functional or other subclass), it records no autograd
history, nothing is compiling (torch.compile, torch.export) and no tensor or torch-function
mode claims the call (``torch.overrides.has_torch_function``: make_fx and export push one).
Dispatch modes (``TorchDispatchMode``) are not visible through public API: entered around
plain tensors, such a mode sees the ops only when called as ``torch.ops.ebjdat.*``.
"""
from __future__ import annotations

import math

import torch

from . import backends, checks, registry
from .generator import default_generator
from .registry import Clamp, Like, Norm, PerSample, Real

SOURCES: dict[tuple[str, str], str] = {}   # (op name, kind) -> the compiled source

_PLAIN = ("type({t}) is _Tensor and not ({t}.requires_grad and _grad_enabled()) "
          "and not _compiling() and not _torch_function({tensors})")


def source(op: registry.Op, kind: str) -> str:
    """The source of ``kind`` ("public", "prechecked", "implementation", "checked") for op."""
    return SOURCES[(op.name, kind)]


def _namespace(op: registry.Op, **extra) -> dict:
    ns = dict(_Tensor=torch.Tensor, _FLOATS=checks.FLOAT_DTYPES, _BOOL=torch.bool, _INT64=torch.int64,
              _INF=math.inf, _NO_CLAMP=checks.NO_CLAMP, _number=checks.number, _clamp_range=checks.clamp_range,
              _norm=checks.norm, _check_generator=checks.generator, _check_tensors=checks.op_tensors,
              _default_generator=default_generator, _get_backend=backends.get_backend,
              _grad_enabled=torch.is_grad_enabled, _compiling=torch.compiler.is_compiling,
              _torch_function=torch.overrides.has_torch_function_variadic, _OP=op, **extra)
    for a in op.args:   # defaults and None replacements, by name (a default's identity matters: UNIT)
        ns[f"_D_{a.name}"] = getattr(a, "default", None)
        if isinstance(a, Real) and a.none not in (registry.REQUIRED, None):
            ns[f"_N_{a.name}"] = a.none
    return ns


def _compile(op: registry.Op, kind: str, name: str, text: str, ns: dict):
    SOURCES[(op.name, kind)] = text
    exec(compile(text, f"<ebjdat.ops {kind} {op.public_name}>", "exec"), ns)   # noqa: S102
    return ns[name]


class _Condition:
    """The common case of an op's tensors as one ``and`` expression; x's shape, device
    and dtypes read once (walrus names: each read builds an object)."""

    def __init__(self, op: registry.Op):
        self.t = op.target.name
        self.bound: set[str] = set()

    def once(self, name: str, expr: str) -> str:
        """``(name := expr)`` the first time, ``name`` after."""
        if name in self.bound:
            return name
        self.bound.add(name)
        return f"({name} := {expr})"

    def build(self, op: registry.Op, writable: bool) -> str:
        t = self.t
        # is_inference() is not traceable: under torch.compile it is not asked
        parts = [f"type({t}) is _Tensor", f"{self.once('dtype', f'{t}.dtype')} in _FLOATS",
                 f"(_compiling() or not {t}.is_inference())"]
        if writable:
            parts += [f"not {t}.requires_grad", f"{t}.is_contiguous()"]
        for a in op.tensors[1:]:
            n = a.name
            parts.append(f"type({n}) is _Tensor")
            if isinstance(a, Like):
                parts.append(f"{n}.dtype == dtype" if a.same_dtype else f"{n}.dtype in _FLOATS")
                parts.append(f"{n}.shape == {self.once('shape', f'{t}.shape')}")
            else:
                if "batch" not in self.bound:
                    parts.append(f"len({self.once('batch', self.once('shape', f'{t}.shape') + '[:1]')}) == 1")
                if isinstance(a, PerSample):
                    parts.append(f"{n}.dtype == sdtype" if "sdtype" in self.bound
                                 else f"{self.once('sdtype', f'{n}.dtype')} in _FLOATS")
                else:
                    parts += [f"{n}.dtype == _BOOL", f"(_compiling() or not {n}.is_inference())"]
                    if writable:
                        parts += [f"not {n}.requires_grad", f"{n}.is_contiguous()"]
                parts.append(f"{n}.shape == batch")
            parts.append(f"{n}.device == {self.once('device', f'{t}.device')}")
        return "\n            and ".join(parts)


def _tensor_check(op: registry.Op, writable: bool, state: bool = False) -> list[str]:
    cond = _Condition(op)
    text = cond.build(op, writable)
    if state:
        dev = cond.once("device", f"{op.target.name}.device")
        text += (f"\n            and (state is None or (type(state) is _Tensor and state.dtype == _INT64"
                 f" and state.shape == (3,) and state.device == {dev}"
                 f" and (_compiling() or not state.is_inference())))")
    names = ", ".join(a.name for a in op.tensors)
    extra = ", state=state, written=False" if state else ", written=False" if not writable else ""
    return [f"    if not ({text}):", f"        _check_tensors(_OP, ({names},){extra})"]


def _scalar_lines(op: registry.Op) -> list[str]:
    t = op.target.name
    out = []
    for a in op.scalars:
        n = a.name
        if isinstance(a, Real) and a.none in (registry.REQUIRED, None):
            none = ", allow_none=True" if a.none is None else ""
            out += [f"    if type({n}) is not float or not 0.0 <= {n} < _INF:",
                    f"        {n} = _number({n!r}, {n}{none})"]
        elif isinstance(a, Real):
            out.append(f"    {n} = _N_{n} if {n} is None else _number({n!r}, {n})")
        elif isinstance(a, Clamp):
            fast = "_NO_CLAMP" if a.default is None else n
            out.append(f"    lo, hi = {fast} if {n} is _D_{n} else _clamp_range({n})")
        elif isinstance(a, Norm):
            out += [f"    if {n} != {a.default!r}:", f"        _norm({n}, {t}, {t!r})"]
    return out


def _dispatcher_scalar_lines(op: registry.Op) -> list[str]:
    """The dispatcher's scalars as the public op would pass them on: Reals finite and >= 0
    (or their None value: None for ``float?``, e.g. grad_clip's inf), lo <= hi, a known
    norm; and a state wherever the op draws."""
    t, out = op.target.name, []
    for a in op.scalars:
        n = a.name
        if isinstance(a, Real) and a.none is registry.REQUIRED:
            out.append(f"    {n} = _number({n!r}, {n})")
        elif isinstance(a, Real) and a.none is None:
            out.append(f"    {n} = _number({n!r}, {n}, allow_none=True)")
        elif isinstance(a, Real):
            out.append(f"    {n} = {n} if {n} == _N_{n} else _number({n!r}, {n})")
        elif isinstance(a, Clamp):
            out.append("    lo, hi = _clamp_range((lo, hi))")
        elif isinstance(a, Norm):
            out.append(f"    _norm({n}, {t}, {t!r})")
    if (g := op.generator) is not None:
        draws = f"{g.when} > 0" if g.when else "True"
        out += [f"    if state is None and {draws}:",
                f"        raise ValueError({op.public_name + ' draws noise here: pass the generator state'!r})"]
    return out


def _state_line(op: registry.Op) -> list[str]:
    g = op.generator
    if g is None:
        return []
    draw = f"(generator or _default_generator({op.target.name}.device)).state"
    return [f"    state = {draw}" + (f" if {g.when} > 0 else None" if g.when else "")]


def _call_lines(op: registry.Op) -> list[str]:
    t = op.target.name
    args = ", ".join(op.impl_names() + ["backend"])
    plain = _PLAIN.format(t=t, tensors=", ".join(a.name for a in op.tensors))
    return ["    backend = _get_backend()", f"    if {plain}:", f"        _impl({args})",
            "    else:", f"        _op({args})"]


def public(op: registry.Op, impl, overload):
    """``ebjdat.ops.<op>_``: tensors positional, the rest keywords, every argument checked."""
    params = [a.name for a in op.tensors] + ["*"]
    for a in op.args:
        if not a.tensor:
            d = getattr(a, "default", None)
            params.append(a.name if d is registry.REQUIRED else f"{a.name}={'None' if d is None else f'_D_{a.name}'}")
    lines = [f"def {op.public_name}({', '.join(params)}):", *_tensor_check(op, writable=True), *_scalar_lines(op)]
    if op.generator is not None:
        t = op.target.name
        lines += ["    if generator is not None:", f"        _check_generator(generator, {t})"]
    lines += _state_line(op) + _call_lines(op) + [f"    return {op.target.name}"]
    fn = _compile(op, "public", op.public_name, "\n".join(lines) + "\n", _namespace(op, _impl=impl, _op=overload))
    fn.__doc__, fn.__module__, fn.__qualname__ = op.doc, "ebjdat.ops", op.public_name
    return fn


def prechecked(op: registry.Op, impl, overload):
    """``ebjdat.ops.prechecked.<op>_``: the schema's arguments with the generator for its
    state, nothing checked."""
    names = [("generator" if n == "state" else n) for n in op.impl_names()]
    lines = [f"def {op.public_name}({', '.join(names)}):", *_state_line(op), *_call_lines(op)]
    fn = _compile(op, "prechecked", op.public_name, "\n".join(lines) + "\n", _namespace(op, _impl=impl, _op=overload))
    fn.__doc__ = (f"ebjdat.ops.{op.public_name} with checked arguments: ({', '.join(names)}), "
                  f"the scalars as the schema takes them; returns None.")
    fn.__qualname__ = op.public_name
    return fn


def implementation(op: registry.Op, resolve, run):
    """The torch.library implementation: ``resolve(backend, x)`` gives the backend; dense
    tensors sharing x's layout go straight to its function, the rest through ``run``."""
    t, names = op.target.name, op.impl_names()
    dense = " and ".join(f"{a.name}.is_contiguous()" for a in op.tensors)
    work = f"{t}.shape[0]" if op.per_sample else f"{t}.numel()"
    others = "".join(f"{a.name}, " for a in op.tensors[1:])
    rest = "".join(f"{n}, " for n in names[len(op.tensors):])
    lines = [f"def {op.public_name}({', '.join(names + ['backend'])}):",
             f"    impl = _resolve(backend, {t})",
             f"    if impl.ANY_LAYOUT or ({dense}):",
             f"        if {work}:",
             f"            impl.{op.name}({', '.join(names)}, None)",
             "        return",
             f"    _run(_OP, impl, {t}, ({others}), ({rest}))"]
    return _compile(op, "implementation", op.public_name, "\n".join(lines) + "\n",
                    _namespace(op, _resolve=resolve, _run=run))


def checked(op: registry.Op, impl):
    """The kernel the dispatcher calls: the tensors, the scalars and the state checked as
    the public op checks them (``torch.ops.ebjdat.*`` is public too), then ``impl``."""
    args = ", ".join(op.impl_names() + ["backend"])
    lines = [f"def {op.public_name}({args}):", *_tensor_check(op, writable=False, state=op.generator is not None),
             *_dispatcher_scalar_lines(op), f"    _impl({args})"]
    return _compile(op, "checked", op.public_name, "\n".join(lines) + "\n", _namespace(op, _impl=impl))
