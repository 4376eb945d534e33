"""The op registry: each fused op described once.

An op family is a folder of ebjdat/ops/ (``sgld/``, ``pgd/``, ``mala/``): its ``__init__.py``
lists its ops in ``OPS`` (``Op`` records of this module), ``spec.py`` holds their torch
specification (the ``torch`` backend), ``triton.py`` their Triton kernels and launches,
``cuda.py`` the launches of their ``ebjdat._C`` entries (csrc/<family>.cpp,
kernels/<family>.cu and .cuh). ``ops()`` finds the folders; nothing lists them.

Everything else iterates the records: the public op with its argument checks and the
prechecked entry (generate.py), the torch.library schema, implementation and fake
(library.py), the backends' dispatch (backends.py), the bench rows (bench/suite_ops.py,
bench/formulas.py), the compile report's variants and the opcheck and bad-input tests.

An op's arguments, in the order of its public signature: tensors (positional; the first
is the ``Target`` it updates in place), then keywords: scalars (``Real``, ``Clamp``,
``Norm``) and the ``Generator``. Its torch.library schema and every backend take them as
``(tensors..., state, scalars..., backend)`` with a ``Clamp`` as ``lo, hi`` and the
generator as its state tensor; a backend function also takes ``layout`` instead of backend.
"""
from __future__ import annotations

import functools
import importlib
import math
import pkgutil
from dataclasses import dataclass
from typing import Callable

import torch

REQUIRED = object()   # a keyword without default; for Real.none: None is refused
# names the generated functions use themselves (generate.py), so no argument may take them
RESERVED = frozenset({"dtype", "shape", "device", "batch", "sdtype", "state", "lo", "hi", "backend", "impl",
                      "layout"})
UNIT = (0.0, 1.0)     # the attacks' default clamp (passed by default, it needs no check)


# ----------------------------------------------------------------------------- tensors
@dataclass(frozen=True)
class Target:
    """The float tensor (any shape) the op updates in place; the others are sized by it.
    ``reads``: whether the op reads its old values (the bench's compulsory traffic)."""
    name: str
    reads: bool = True
    tensor = True


@dataclass(frozen=True)
class Like:
    """A float tensor of the target's shape and device: any float dtype, or the target's
    (``same_dtype``). ``fill``: its values in the bench and the tests, "normal" or "uniform"."""
    name: str
    same_dtype: bool = False
    fill: str = "normal"
    tensor = True


@dataclass(frozen=True)
class PerSample:
    """A (B,) float tensor, B = target.shape[0], on the target's device; an op's per-sample
    tensors share one dtype (the first one's), any float dtype."""
    name: str
    tensor = True


@dataclass(frozen=True)
class Mask:
    """A (B,) bool tensor the op writes, on the target's device."""
    name: str
    tensor = True


# ----------------------------------------------------------------------------- scalars
@dataclass(frozen=True)
class Real:
    """A finite non-negative real number (converted to float). ``none``: what None means:
    REQUIRED refuses it, None passes it on (schema ``float?``), a float replaces it."""
    name: str
    default: object = REQUIRED
    none: object = REQUIRED
    tensor = False


@dataclass(frozen=True)
class Clamp:
    """``clamp``: None or a (lo, hi) pair; the kernels take lo, hi (-inf, inf for None)."""
    default: object = None
    name: str = "clamp"
    tensor = False


@dataclass(frozen=True)
class Norm:
    """``norm``: "linf" or "l2" (l2 needs a batch dimension)."""
    default: str = "linf"
    name: str = "norm"
    tensor = False


@dataclass(frozen=True)
class Generator:
    """``generator``: a PhiloxGenerator on the target's device (the device's default one
    when None); its state tensor reaches the kernels. ``when``: the Real whose value > 0
    makes the op draw (the state is then None otherwise); None: the op always draws."""
    when: str | None = None
    name: str = "generator"
    tensor = False


# ----------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class BenchCase:
    """A bench row: the op at the public keyword arguments ``kwargs``, against ``plain``,
    the same math in eager torch, called as ``plain(*tensors, **kwargs)``."""
    name: str
    kwargs: dict
    plain: Callable


@dataclass(frozen=True)
class Variant:
    """A setting of the scalars that the kernels specialise on, for the compile report
    (and the opcheck samples): public keyword arguments, the report's family label and the
    words around the dtype in a variant's name. ``layouts``: whether channels_last is
    compiled too; ``per_sample``: the size tag is D (per-sample elements), not n."""
    family: str
    kwargs: dict
    prefix: str = ""
    suffix: str = ""
    layouts: bool = False
    per_sample: bool = False


# ----------------------------------------------------------------------------- ops
@dataclass(frozen=True)
class Op:
    """One fused op. ``name`` names it in every layer: the backends' functions, the
    ``ebjdat._C`` entries and the kernels; the public op and ``torch.ops.ebjdat`` add the
    in-place ``_``. ``doc``: the public op's docstring (shapes and math). ``package``: the
    family's (its spec, triton and cuda modules). ``per_sample``: the op's work is per
    sample (nothing to do when x has no samples, rather than no elements).
    ``cuda_flags``: (template argument index, word if true, word if false) naming the
    CUDA kernels' boolean template flags in the compile report's family labels."""
    name: str
    args: tuple
    doc: str
    package: str
    bench: tuple = ()
    variants: tuple = ()
    per_sample: bool = False
    cuda_flags: tuple = ()

    def __post_init__(self):
        names = [a.name for a in self.args]
        if not self.args or not isinstance(self.args[0], Target) or sum(isinstance(a, Target) for a in self.args) > 1:
            raise ValueError(f"{self.name}: the first argument, and only it, must be the Target")
        clash = set(names) & RESERVED
        if len(set(names)) != len(names) or clash or not all(n.isidentifier() for n in names):
            raise ValueError(f"{self.name}: argument names must be distinct identifiers, none of {sorted(RESERVED)}")

    @property
    def public_name(self) -> str:
        return self.name + "_"

    @property
    def target(self) -> Target:
        return self.args[0]

    @property
    def tensors(self) -> tuple:
        return tuple(a for a in self.args if a.tensor)

    @property
    def scalars(self) -> tuple:
        return tuple(a for a in self.args if not a.tensor and not isinstance(a, Generator))

    @property
    def generator(self) -> Generator | None:
        return next((a for a in self.args if isinstance(a, Generator)), None)

    @property
    def mutated(self) -> tuple:
        """The tensors the op writes: the target and the masks."""
        return tuple(a for a in self.tensors if isinstance(a, (Target, Mask)))

    def impl_names(self) -> list[str]:
        """The schema's argument names without backend: tensors, state, scalars."""
        names = [a.name for a in self.tensors] + (["state"] if self.generator else [])
        for a in self.scalars:
            names += ["lo", "hi"] if isinstance(a, Clamp) else [a.name]
        return names

    def schema(self) -> str:
        """The torch.library schema: mutated tensors (and the state) are aliased ``(x!)``."""
        alias = iter("abcdefgh")
        parts = [f"Tensor({next(alias)}!) {a.name}" if isinstance(a, (Target, Mask)) else f"Tensor {a.name}"
                 for a in self.tensors]
        if (g := self.generator) is not None:
            parts.append(f"Tensor({next(alias)}!){'?' if g.when else ''} state")
        for a in self.scalars:
            if isinstance(a, Clamp):
                parts += ["float lo", "float hi"]
            elif isinstance(a, Norm):
                parts.append(f"str {a.name}")
            else:
                parts.append(f"float{'?' if a.none is None else ''} {a.name}")
        return f"{self.public_name}({', '.join(parts + ['str backend'])}) -> ()"

    def traffic(self) -> tuple[int, int]:
        """(x-sized tensors read, written): the compulsory traffic of one call; the (B,)
        tensors are left out (B values against B * D)."""
        reads = sum(isinstance(a, Like) for a in self.args) + (1 if self.target.reads else 0)
        return reads, 1

    # --------------------------------------------------------------- for tests, bench, report
    def make_tensors(self, shape, x_dtype, make, grad_dtype=None, sample_dtype=torch.float32) -> dict:
        """{name: tensor} of every tensor argument for a target of ``shape``:
        ``make(shape, dtype, fill)`` builds each one ("uniform", "normal" or "mask" fill);
        Like tensors of any dtype take ``grad_dtype`` (x's by default), per-sample ones
        ``sample_dtype``."""
        batch = tuple(shape[:1])
        out = {}
        for a in self.tensors:
            if isinstance(a, Target):
                out[a.name] = make(shape, x_dtype, "uniform")
            elif isinstance(a, Like):
                out[a.name] = make(shape, x_dtype if a.same_dtype else (grad_dtype or x_dtype), a.fill)
            elif isinstance(a, PerSample):
                out[a.name] = make(batch, sample_dtype, "normal")
            else:
                out[a.name] = make(batch, torch.bool, "mask")
        return out

    def lower(self, tensors: dict, kwargs: dict, state) -> tuple:
        """The schema's arguments (without backend) of a public call with ``tensors`` and
        ``kwargs`` (checked values; defaults filled in), the generator given as ``state``
        (left out, None, when the op would not draw)."""
        out = [tensors[a.name] for a in self.tensors]
        if (g := self.generator) is not None:
            draws = g.when is None or kwargs.get(g.when, self._default(g.when)) > 0
            out.append(state if draws else None)
        for a in self.scalars:
            v = kwargs.get(a.name, a.default)
            if isinstance(a, Clamp):
                out += [-math.inf, math.inf] if v is None else [float(v[0]), float(v[1])]
            elif isinstance(a, Real) and v is None:
                out.append(a.none)
            else:
                out.append(v if isinstance(a, Norm) else float(v))
        return tuple(out)

    def _default(self, name: str):
        return next(a.default for a in self.args if a.name == name)


@functools.cache
def ops() -> tuple[Op, ...]:
    """Every op of every family folder of ebjdat/ops/, families in name order."""
    package = importlib.import_module(__package__)
    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.ispkg:
            found += importlib.import_module(f"{__package__}.{info.name}").OPS
    names = [op.name for op in found]
    if len(set(names)) != len(names):
        raise RuntimeError(f"two ops share a name: {names}")
    return tuple(found)


def op(name: str) -> Op:
    """The op called ``name`` (``sgld_step``, or its public name ``sgld_step_``)."""
    for o in ops():
        if name in (o.name, o.public_name):
            return o
    raise KeyError(f"no op {name!r}; the ops are {', '.join(o.name for o in ops())}")
