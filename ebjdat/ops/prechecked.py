"""The fused ops without argument checks, for loops that checked their arguments once:
the samplers (``ebjdat.sampling``) and the attacks (``ebjdat.attacks``) validate their
settings when built and their inputs once per call, then run every step through here.

Same names, same math and the same torch.library ops as ``ebjdat.ops``, one function per
registered op (generate.prechecked): the schema's arguments in its order, positional, with
the generator (or None) in the state's place; the scalars already validated floats (clamp
as lo, hi: -inf, inf for none; grad_clip inf for none). Nothing is checked: a grad of
another shape or device can make the cuda backend read out of bounds. Anything else should
call ``ebjdat.ops``.
"""
from __future__ import annotations

from . import generate, library, registry

for _op in registry.ops():
    globals()[_op.public_name] = generate.prechecked(_op, library.IMPLS[_op.name], library.OVERLOADS[_op.name])
    globals()[_op.public_name].__module__ = __name__
