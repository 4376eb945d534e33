"""Seeding as torch users expect (generator=None: torch.manual_seed repeats a call), the
samplers' per-call n_steps and diagnostics, PGD's positional arguments, and the grad's
autograd state on every backend."""
import pytest
import torch
from torch import nn

from ebjdat import ops
from ebjdat.attacks import PGD
from ebjdat.sampling import MALA, PYLD, SGLD, ReplayBuffer, Trace

from .conftest import gpu

B, D = 8, 5


def quad(x, y=None):
    """E(x) = ||x||^2 / 2 per sample: dE/dx = x."""
    return 0.5 * x.flatten(1).square().sum(1)


def model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(D, 4)).eval()


def samplers(**kw):
    return {"sgld": SGLD(quad, n_steps=3, step_size=0.1, noise_std=0.05, **kw),
            "pyld": PYLD(quad, n_steps=2, n_inner=2, step_size=0.1, noise_std=0.05, grad_clip=None,
                         clamp=None, **kw),
            "mala": MALA(quad, n_steps=3, step_size=0.05, **kw)}


# ---- seeding --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sgld", "pyld", "mala"])
def test_manual_seed_repeats_a_sampler_call_without_generator(name):
    s = samplers()[name]
    x0 = torch.zeros(B, D)
    torch.manual_seed(0)
    a = s.sample(x_init=x0)
    b = s.sample(x_init=x0)            # the stream goes on: another call, other noise
    torch.manual_seed(0)
    c = s.sample(x_init=x0)
    assert torch.equal(a, c) and not torch.equal(a, b)
    torch.manual_seed(1)
    assert not torch.equal(a, s.sample(x_init=x0))


def test_manual_seed_repeats_buffer_draws_and_noise():
    def run():
        torch.manual_seed(3)
        buf = ReplayBuffer(50, (D,))
        s = SGLD(quad, n_steps=2, step_size=0.1, noise_std=0.05, buffer=buf)
        return s.sample(16), buf.data.clone()

    (a, da), (b, db) = run(), run()
    assert torch.equal(a, b) and torch.equal(da, db)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_manual_seed_repeats_the_attack_random_start(norm):
    net = model()
    x, y = torch.rand(B, D), torch.randint(0, 4, (B,))
    atk = PGD(net, 0.1, 0.01, 0, norm=norm)   # 0 steps: the result is the random start
    torch.manual_seed(0)
    a = atk(x, y)
    b = atk(x, y)
    torch.manual_seed(0)
    c = atk(x, y)
    assert torch.equal(a, c) and not torch.equal(a, b)
    assert not torch.equal(a, x)


def test_a_given_generator_continues_its_stream_whatever_torch_is_seeded():
    g = ops.PhiloxGenerator(5)
    s = SGLD(quad, n_steps=2, step_size=0.1, noise_std=0.05, generator=g)
    x0 = torch.zeros(B, D)
    torch.manual_seed(0)
    a = s.sample(x_init=x0)
    torch.manual_seed(0)
    b = s.sample(x_init=x0)
    assert not torch.equal(a, b)
    g.manual_seed(5)
    assert torch.equal(s.sample(x_init=x0), a)


def test_one_philox_generator_serves_buffer_sampler_and_attack():
    g = ops.PhiloxGenerator(11)
    buf = ReplayBuffer(40, (D,), generator=g)
    s = SGLD(quad, n_steps=1, step_size=0.1, noise_std=0.05, buffer=buf, generator=g)
    assert s.sample(4).shape == (4, D)
    atk = PGD(model(), 0.1, 0.01, 1, generator=g)
    assert atk(torch.rand(4, D), torch.zeros(4, dtype=torch.long)).shape == (4, D)
    # a torch.Generator is still accepted where it was (the buffer)
    assert ReplayBuffer(40, (D,), generator=torch.Generator().manual_seed(1)).sample(3)[0].shape == (3, D)


def test_per_call_generator_reads_nothing_on_the_host(monkeypatch):
    """The seed draw and the whole noisy call stay on the device (no .item() and the like;
    float() is left alone: the torch backend rounds its Python scalars through it)."""
    s = SGLD(quad, n_steps=2, step_size=0.1, noise_std=0.05)
    x0 = torch.zeros(B, D)

    def boom(*a, **k):
        raise AssertionError("a tensor was read on the host")

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, boom)
    out, trace = s.sample(x_init=x0, diagnostics=True, keep_every=1)
    monkeypatch.undo()
    assert torch.isfinite(trace.energy).all() and out.shape == (B, D)


@gpu
@pytest.mark.parametrize("name", ["sgld", "pyld", "mala"])
def test_manual_seed_repeats_calls_on_cuda(name):
    s = samplers()[name]
    x0 = torch.zeros(B, D, device="cuda")
    torch.manual_seed(0)
    a = s.sample(x_init=x0)
    b = s.sample(x_init=x0)
    torch.manual_seed(0)
    assert torch.equal(a, s.sample(x_init=x0)) and not torch.equal(a, b)
    atk = PGD(model().cuda(), 0.1, 0.01, 1)
    x, y = torch.rand(B, D, device="cuda"), torch.zeros(B, dtype=torch.long, device="cuda")
    torch.manual_seed(0)
    a = atk(x, y)
    torch.manual_seed(0)
    assert torch.equal(a, atk(x, y))


# ---- per-call n_steps -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sgld", "pyld", "mala"])
def test_per_call_n_steps_overrides_the_constructor(name):
    x0 = torch.randn(B, D, generator=torch.Generator().manual_seed(0))
    s = samplers(generator=ops.PhiloxGenerator(1))[name]
    assert torch.equal(s.sample(x_init=x0, n_steps=0), x0)
    ref = {"sgld": SGLD(quad, n_steps=5, step_size=0.1, noise_std=0.05, generator=ops.PhiloxGenerator(1)),
           "pyld": PYLD(quad, n_steps=5, n_inner=2, step_size=0.1, noise_std=0.05, grad_clip=None, clamp=None,
                        generator=ops.PhiloxGenerator(1)),
           "mala": MALA(quad, n_steps=5, step_size=0.05, generator=ops.PhiloxGenerator(1))}[name]
    s.generator.manual_seed(1)
    assert torch.equal(s.sample(x_init=x0, n_steps=5), ref.sample(x_init=x0))
    default = s.n_steps
    s.sample(x_init=x0, n_steps=1)
    assert s.n_steps == default   # the constructor's setting is unchanged
    if name == "mala":
        assert s.accepted.max() <= 1   # counted over this call's single step


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_bad_per_call_n_steps_names_it(bad):
    with pytest.raises(ValueError, match="n_steps must be an int >= 0"):
        SGLD(quad, n_steps=1, step_size=0.1).sample(x_init=torch.zeros(2, D), n_steps=bad)


# ---- diagnostics ------------------------------------------------------------------------------
def test_trace_records_energy_grad_norm_and_kept_states():
    """On E = ||x||^2 / 2 without noise, x_k = (1 - s)^k x_0: the trace is known exactly."""
    s, n = 0.1, 5
    x0 = torch.randn(B, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out, trace = SGLD(quad, n_steps=n, step_size=s).sample(x_init=x0, diagnostics=True, keep_every=2)
    assert isinstance(trace, Trace)
    xs = [x0 * (1 - s) ** k for k in range(n + 1)]
    want_e = torch.stack([quad(x).mean() for x in xs[:n]]).float()
    want_g = torch.stack([x.norm(dim=1).mean() for x in xs[:n]]).float()
    assert trace.energy.shape == (n,) and trace.grad_norm.shape == (n,)
    torch.testing.assert_close(trace.energy, want_e)
    torch.testing.assert_close(trace.grad_norm, want_g)
    assert trace.kept_steps == [2, 4] and trace.states.shape == (2, B, D)
    torch.testing.assert_close(trace.states, torch.stack([xs[2], xs[4]]))
    torch.testing.assert_close(out, xs[n])


@pytest.mark.parametrize("name", ["pyld", "mala"])
def test_trace_of_pyld_and_mala(name):
    s = samplers(generator=ops.PhiloxGenerator(2))[name]
    x0 = torch.randn(B, D, generator=torch.Generator().manual_seed(0))
    out, trace = s.sample(x_init=x0, n_steps=4, diagnostics=True, keep_every=4)
    torch.testing.assert_close(trace.energy[0], quad(x0).mean())     # step 0 starts at x0
    torch.testing.assert_close(trace.grad_norm[0], x0.norm(dim=1).mean())
    assert torch.isfinite(trace.energy).all() and torch.equal(trace.states[0], out)
    s.generator.manual_seed(2)
    assert torch.equal(s.sample(x_init=x0, n_steps=4), out)   # tracing changes nothing


def test_diagnostics_off_returns_the_samples_alone_and_bad_settings_name_them():
    s = SGLD(quad, n_steps=2, step_size=0.1)
    assert isinstance(s.sample(x_init=torch.zeros(2, D)), torch.Tensor)
    out, trace = s.sample(x_init=torch.zeros(2, D), diagnostics=True)
    assert trace.states is None and trace.kept_steps == []
    with pytest.raises(ValueError, match="keep_every needs diagnostics=True"):
        s.sample(x_init=torch.zeros(2, D), keep_every=1)
    with pytest.raises(ValueError, match="keep_every must be an int >= 1"):
        s.sample(x_init=torch.zeros(2, D), diagnostics=True, keep_every=0)
    with pytest.raises(ValueError, match="diagnostics=True needs cuda_graph=False"):
        SGLD(quad, n_steps=2, step_size=0.1, cuda_graph=True).sample(x_init=torch.zeros(2, D), diagnostics=True)


# ---- PGD's positional arguments ---------------------------------------------------------------
def test_pgd_takes_model_eps_alpha_steps_positionally():
    net = model()
    x, y = torch.rand(B, D), torch.randint(0, 4, (B,))
    a = PGD(net, 0.1, 0.02, 3, random_start=False)(x, y)
    b = PGD(net, eps=0.1, alpha=0.02, steps=3, random_start=False)(x, y)
    assert torch.equal(a, b) and not torch.equal(a, x)
    atk = PGD(net, 0.2, 0.03, 4)
    assert (atk.eps, atk.alpha, atk.steps) == (0.2, 0.03, 4)
    with pytest.raises(TypeError):
        PGD(net, 0.1, 0.02, 3, False)   # the rest are keyword-only


# ---- the grad's autograd state, on every backend -------------------------------------------------
@pytest.mark.parametrize("backend", ops.available_backends())
def test_a_grad_that_requires_grad_attaches_no_history(backend):
    """A grad with autograd history (create_graph=True, torch.func.grad) is read as a
    constant: the target records no history, and the values are those of the detached grad."""
    w = torch.randn(B, D, requires_grad=True)
    grad = w * 2.0
    calls = {
        "sgld_step_": lambda t, g: ops.sgld_step_(t, g, step_size=0.1, noise_std=0.1, grad_clip=1.0,
                                                  generator=ops.PhiloxGenerator(0)),
        "pgd_step_": lambda t, g: ops.pgd_step_(t, g, torch.zeros(B, D), alpha=0.1, eps=0.5),
        "mala_propose_": lambda t, g: ops.mala_propose_(t, torch.ones(B, D), g, step_size=0.1,
                                                        generator=ops.PhiloxGenerator(0)),
    }
    with ops.use_backend(backend):
        for name, call in calls.items():
            x, ref = torch.zeros(B, D), torch.zeros(B, D)
            call(x, grad)
            call(ref, grad.detach())
            assert not x.requires_grad and x.grad_fn is None, name
            assert torch.equal(x, ref), name
