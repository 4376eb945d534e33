"""sgld_step's specification (the ``torch`` backend; conventions in ebjdat/ops/spec.py)."""
from __future__ import annotations

from .. import philox
from ..spec import clamp, compute_dtype, scalar


def sgld_step(x, grad, state, step_size, noise_std, grad_clip, lo, hi, layout=None):
    """x <- clamp(x + step_size * clamp(grad, -grad_clip, grad_clip) + noise_std * z, lo, hi).

    The inputs' autograd state is ignored: a grad (or any other input) that requires grad,
    e.g. from ``torch.func.grad`` or ``create_graph=True``, is read as a constant (detached),
    so the update never records autograd history into the target, as on every backend."""
    c = compute_dtype(x)
    g = grad.detach().to(c)
    if grad_clip != float("inf"):
        g = g.clamp(-scalar(grad_clip, c), scalar(grad_clip, c))
    v = x.to(c) + scalar(step_size, c) * g
    if noise_std > 0:
        v = v + scalar(noise_std, c) * philox.normal(state, x.shape).to(c)
        philox.advance_(state, philox.counters_for(x.numel()))
    x.copy_(clamp(v, lo, hi))
