"""SGLD and PYLD: the Langevin stationary law, the samplers' contract, JEM++'s reduction."""
import math

import pytest
import torch
from torch import nn

from ebjdat import ops
from ebjdat.energy import ClassifierEnergy
from ebjdat.sampling.buffer import ReplayBuffer
from ebjdat.sampling.pyld import PYLD
from ebjdat.sampling.sgld import SGLD

from .conftest import gpu


def quadratic(x, y=None):
    """E(x) = |x|^2 / 2 per sample."""
    return 0.5 * x.pow(2).flatten(1).sum(1)


def small_cnn(norm=False):
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1)]
    layers += [nn.BatchNorm2d(8, momentum=0.9)] if norm else []
    layers += [nn.LeakyReLU(0.2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("h", [0.1, 0.5])
def test_sgld_reaches_the_langevin_stationary_variance(h):
    """x <- x - h x + sqrt(2h) z is AR(1) with stationary variance 1 / (1 - h/2)."""
    sgld = SGLD(quadratic, n_steps=150, step_size=h, noise_std=math.sqrt(2 * h),
                generator=ops.PhiloxGenerator(0))
    x = sgld.sample(x_init=torch.zeros(4096, 16))
    exact = 1 / (1 - h / 2)
    se = exact * math.sqrt(2 / x.numel())
    assert abs(x.var().item() - exact) < 5 * se
    assert abs(x.mean().item()) < 5 * math.sqrt(exact / x.numel())


def test_sgld_step_is_the_formula():
    """One SADA-style step equals clamp(x - s * clamp(dE/dx, -c, c)) computed by hand."""
    model = small_cnn().eval()
    energy = ClassifierEnergy(model)
    x0 = torch.rand(5, 3, 6, 6) * 2 - 1
    x = SGLD(energy, n_steps=1, step_size=0.7, grad_clip=0.01, clamp=(-1.0, 1.0)).sample(x_init=x0)
    x_ = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(energy(x_).sum(), x_)
    torch.testing.assert_close(x, (x0 - 0.7 * g.clamp(-0.01, 0.01)).clamp(-1, 1))


def test_sgld_contract_no_param_grad_mode_kept_x_init_untouched():
    model = small_cnn(norm=True)
    for train in (True, False):
        model.train(train)
        x0 = torch.rand(4, 3, 6, 6)
        before = x0.clone()
        y = torch.tensor([0, 1, 2, 3])
        SGLD(ClassifierEnergy(model), n_steps=3, step_size=1.0, noise_std=0.01).sample(x_init=x0, y=y)
        assert model.training == train
        assert all(p.grad is None for p in model.parameters())
        assert torch.equal(x0, before)


def test_sgld_with_buffer_writes_samples_back():
    buf = ReplayBuffer(100, (3, 6, 6), reinit_freq=0.0, generator=torch.Generator().manual_seed(0))
    sgld = SGLD(ClassifierEnergy(small_cnn().eval()), n_steps=2, step_size=1.0, grad_clip=1.0,
                clamp=(-1.0, 1.0), buffer=buf)
    torch.manual_seed(1)
    x = sgld.sample(16)
    rows = torch.stack([r for r in buf.state_dict()["buffer"]])
    hits = [(rows == s).flatten(1).all(1).any().item() for s in x]
    assert all(hits) and x.shape == (16, 3, 6, 6) and x.abs().max() <= 1


def test_sgld_bad_input():
    with pytest.raises(ValueError, match="energy_fn must return one energy per sample"):
        SGLD(lambda x: x.sum(), n_steps=1, step_size=0.1).sample(x_init=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="energy_fn must return one energy per sample"):
        SGLD(lambda x: x, n_steps=1, step_size=0.1).sample(x_init=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="give x_init, or a buffer"):
        SGLD(quadratic, n_steps=1, step_size=0.1).sample(4)
    with pytest.raises(ValueError, match="n_steps must be"):
        SGLD(quadratic, n_steps=-1, step_size=0.1)
    with pytest.raises(ValueError, match="step_size must be >= 0"):
        SGLD(quadratic, n_steps=1, step_size=-0.1)
    with pytest.raises(TypeError, match="energy_fn must be callable"):
        SGLD(None, n_steps=1, step_size=0.1)
    with pytest.raises(ValueError, match="y must have shape"):
        SGLD(quadratic, n_steps=1, step_size=0.1).sample(x_init=torch.zeros(3, 2), y=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="cuda_graph=True needs CUDA tensors"):
        SGLD(quadratic, n_steps=1, step_size=0.1, cuda_graph=True).sample(x_init=torch.zeros(3, 2))


def _pyld_parts():
    model = small_cnn().eval()
    first, rest = model[0], model[1:]
    head = lambda h, y=None: -torch.logsumexp(rest(h), 1)  # noqa: E731
    return model, first, head


def test_pyld_reduction_equals_the_literal_hamiltonian():
    """With a linear first layer, JEM++'s inner Hamiltonian steps equal n_inner clipped
    steps along the outer input gradient (ebjdat/published.py): both modes give the same samples."""
    model, first, head = _pyld_parts()
    x0 = torch.rand(6, 3, 8, 8) * 2 - 1
    literal = PYLD(first_layer=first, head=head, n_steps=4, n_inner=5, step_size=0.02).sample(x_init=x0)
    reduced = PYLD(ClassifierEnergy(model), n_steps=4, n_inner=5, step_size=0.02).sample(x_init=x0)
    assert not torch.equal(literal, x0)
    torch.testing.assert_close(literal, reduced, rtol=1e-5, atol=1e-6)


def test_pyld_is_n_inner_clipped_steps_per_gradient():
    model, _, _ = _pyld_parts()
    energy = ClassifierEnergy(model)
    x0 = torch.rand(3, 3, 8, 8) * 2 - 1
    got = PYLD(energy, n_steps=1, n_inner=3, step_size=0.2).sample(x_init=x0)
    x_ = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(energy(x_).sum(), x_)
    want = x0.clone()
    for _ in range(3):
        want = (want - 0.2 * g.clamp(-1, 1)).clamp(-1, 1)
    torch.testing.assert_close(got, want)


def test_pyld_bad_input():
    with pytest.raises(ValueError, match="give both first_layer and head"):
        PYLD(first_layer=nn.Identity())
    with pytest.raises(ValueError, match="n_inner must be"):
        PYLD(quadratic, n_inner=0)


@gpu
@pytest.mark.parametrize("sampler", ["sgld", "pyld"])
@pytest.mark.parametrize("train", [True, False])
def test_cuda_graph_equals_eager(sampler, train):
    """Graph replays give the eager samples and leave the same BatchNorm statistics."""
    results = []
    for graph in (False, True):
        model = small_cnn(norm=True).cuda().train(train)
        gen = ops.PhiloxGenerator(3, device="cuda")
        kw = dict(n_steps=3, step_size=0.5, noise_std=0.01, generator=gen, cuda_graph=graph)
        s = SGLD(ClassifierEnergy(model), **kw) if sampler == "sgld" else PYLD(ClassifierEnergy(model), **kw)
        x0 = torch.rand(8, 3, 8, 8, device="cuda")
        out = [s.sample(x_init=x0 + i) for i in range(3)]
        results.append((out, [b.clone() for b in model.buffers()], gen.offset))
    (eager, eb, eo), (graphed, gb, go) = results
    assert eo == go
    for a, b in zip(eager + eb, graphed + gb):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda e: SGLD(e, n_steps=2, step_size=0.1),
    lambda e: PYLD(e, n_steps=2, n_inner=2, step_size=0.1),
], ids=["sgld", "pyld"])
def test_labels_are_checked_before_they_index_the_logits(make):
    """Out of range, y would raise a raw index error on the CPU and, on CUDA, a device
    assert that ends the process's CUDA context: a ValueError naming y and [0, K) instead."""
    model = small_cnn().eval()
    sampler = make(ClassifierEnergy(model))
    x0 = torch.rand(4, 3, 6, 6)
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 10\) .*got 10"):
        sampler.sample(x_init=x0, y=torch.tensor([0, 1, 10, 2]))
    with pytest.raises(ValueError, match="y must hold class indices >= 0, got -1"):
        sampler.sample(x_init=x0, y=torch.tensor([0, -1, 3, 2]))
    with pytest.raises(ValueError, match=r"y must have shape \(4,\)"):
        sampler.sample(x_init=x0, y=torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="y must be an integer tensor"):
        sampler.sample(x_init=x0, y=torch.zeros(4))
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        sampler.sample(x_init=x0, y=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="y is on meta"):
        sampler.sample(x_init=x0, y=torch.zeros(4, dtype=torch.long, device="meta"))
    # in range, any integer dtype: the conditional energy -logits[y], as ClassifierEnergy computes it
    y = torch.tensor([9, 0, 3, 3], dtype=torch.int32)
    got = sampler.sample(x_init=x0, y=y)
    want = type(sampler)(lambda x, y: ClassifierEnergy(model)(x, y), n_steps=2, step_size=0.1,
                         **({"n_inner": 2} if isinstance(sampler, PYLD) else {})).sample(x_init=x0, y=y.long())
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # once K is known, a later call is checked before its loop runs (what a CUDA-graph replay needs)
    sampler.n_steps = 0
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        sampler.sample(x_init=x0, y=torch.tensor([0, 1, 2, 11]))


def test_labels_of_an_energy_without_known_classes():
    """Any energy_fn: K is unknown, so only y >= 0, its shape, dtype and device are checked."""
    sgld = SGLD(quadratic, n_steps=1, step_size=0.1)
    with pytest.raises(ValueError, match="y must hold class indices >= 0"):
        sgld.sample(x_init=torch.zeros(2, 3), y=torch.tensor([-3, 0]))
    assert sgld.sample(x_init=torch.ones(2, 3), y=torch.tensor([1000, 0])).shape == (2, 3)
