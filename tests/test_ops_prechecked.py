"""ops.prechecked: the public ops' math without the checks, and the per-step entry of the
samplers and attacks (which check their arguments once per call)."""
import math

import pytest
import torch

from ebjdat import ops
from ebjdat.attacks import PGD
from ebjdat.ops import prechecked
from ebjdat.sampling import SGLD


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_sgld_equals_public_op(backend, noise):
    g = torch.randn(5, 3, 7, 9)
    x0 = torch.rand(5, 3, 7, 9)
    a, b = x0.clone(), x0.clone()
    ops.sgld_step_(a, g, step_size=0.2, noise_std=noise, grad_clip=0.5, clamp=(0.0, 1.0),
                   generator=ops.PhiloxGenerator(3))
    prechecked.sgld_step_(b, g, ops.PhiloxGenerator(3), 0.2, noise, 0.5, 0.0, 1.0)
    assert torch.equal(a, b)
    c = x0.clone()   # no clip, no clamp: inf and -inf, inf
    ops.sgld_step_(a := x0.clone(), g, step_size=0.2)
    prechecked.sgld_step_(c, g, None, 0.2, 0.0, math.inf, -math.inf, math.inf)
    assert torch.equal(a, c)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_equals_public_op(backend, norm):
    xo, g = torch.rand(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    a = (xo + 0.01 * torch.randn_like(xo)).clamp(0, 1)
    b = a.clone()
    ops.pgd_step_(a, g, xo, alpha=0.05, eps=0.1, norm=norm, clamp=(0.0, 1.0))
    prechecked.pgd_step_(b, g, xo, 0.05, 0.1, norm, 0.0, 1.0)
    assert torch.equal(a, b)


def test_steps_skip_the_public_checks(monkeypatch):
    """SGLD and PGD check once per call, then step through ops.prechecked: the public ops
    (which check every argument) are not called per step."""
    def refuse(*args, **kw):
        raise AssertionError("a per-step call went through the checked public op")
    monkeypatch.setattr(ops, "sgld_step_", refuse)
    monkeypatch.setattr(ops, "pgd_step_", refuse)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x = torch.rand(4, 3, 2, 2)
    s = SGLD(lambda v: -model(v).logsumexp(1), n_steps=3, step_size=0.1, noise_std=0.01,
             generator=ops.PhiloxGenerator(0))
    assert s.sample(x_init=x * 2 - 1).shape == x.shape
    x_adv = PGD(model, eps=8 / 255, alpha=2 / 255, steps=3, generator=ops.PhiloxGenerator(1))(x, torch.arange(4) % 3)
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    with pytest.raises(ValueError, match="generator is on"):   # still checked, once per call
        SGLD(lambda v: -model(v).logsumexp(1), n_steps=1, step_size=0.1, noise_std=0.01,
             generator=ops.PhiloxGenerator(0, device="meta")).sample(x_init=x)
