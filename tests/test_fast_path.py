"""Fast mode's recipe takes effect: torch.compile compiles (graphs captured, no break in the
model's forward, a sampler or attack step one graph), channels_last reaches the chains and
attack inputs (no step copies its grad), bf16 autocast reaches the model on the CPU, and
precision "auto" follows the device's bf16 units."""
import pytest
import torch
from torch._dynamo.utils import counters

import ebjdat
from ebjdat import compiling, energy, hardware, ops
from ebjdat.models import SmallCNN, WideResNet
from ebjdat.ops import PhiloxGenerator, library
from ebjdat.sampling import ClassGaussianInit
from ebjdat.train import TrainConfig, Trainer

TINY = dict(dataset="digits", device="cpu", buffer_size=64, label_batch_size=8, batch_size=4,
            sgld_steps=2, pgd_steps=2, log_every=2, eval_pgd_steps=1, steps=4)


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def test_compile_trains_through_compiled_graphs(fresh_dynamo):
    """compile=True: dynamo captures the model's logits path and the sampler's and attack's
    steps, with no graph break, and the losses match eager fp32. (Before the fix, logits_of
    called the OptimizedModule's uncompiled classify: no graph at all.)"""
    eager = Trainer(TrainConfig.preset("sadajem", precision="fp32", **TINY))
    t = Trainer(TrainConfig.preset("sadajem", precision="fp32", compile=True, **TINY))
    assert t.compile_info["active"], t.compile_info
    for _ in range(2):
        a, b = eager.train_step(), t.train_step()
        assert float(b["loss"]) == pytest.approx(float(a["loss"]), rel=1e-4, abs=1e-5)
    graphs = compiling.graph_counts()
    assert graphs["graphs"] >= 3, graphs   # the model, an SGLD step, a PGD step at least
    assert graphs["graph_breaks"] == 0, graphs["break_reasons"]


def test_model_forward_has_no_graph_break(fresh_dynamo):
    for model in (SmallCNN(1, 10), WideResNet(10, 1, 10, 3, norm="batch")):
        x = torch.rand(2, model.body[0].in_channels if isinstance(model, SmallCNN) else 3, 8, 8)
        ex = torch._dynamo.explain(energy.Logits(model))(x)
        assert (ex.graph_count, ex.graph_break_count) == (1, 0), ex.break_reasons


def test_logits_of_runs_the_compiled_module(fresh_dynamo):
    model = SmallCNN(1, 10)
    net = energy.compiled(model, backend="eager")   # dynamo's capture without inductor's build
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(energy.logits_of(net, x), model.classify(x))
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.skipif(not compiling.traces_autograd(), reason="this torch's dynamo cannot trace autograd.grad")
def test_sampler_and_attack_steps_are_one_graph_each(fresh_dynamo):
    model = SmallCNN(1, 10, norm="batch").train()
    gen = PhiloxGenerator(0)
    x, y = torch.rand(4, 1, 8, 8) * 2 - 1, torch.randint(0, 10, (4,))
    sgld = ebjdat.SGLD(energy.ClassifierEnergy(model), n_steps=3, step_size=0.1, noise_std=0.01,
                       grad_clip=1.0, clamp=(-1.0, 1.0), generator=gen)
    atk = ebjdat.PGD(model, eps=0.1, alpha=0.02, steps=3, clamp=(-1.0, 1.0), loss="ebjdat", generator=gen)
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        for fn, args in ((lambda x: sgld.sample(x_init=x), (x,)), (atk, (x, y))):
            ex = torch._dynamo.explain(fn)(*args)
            assert (ex.graph_count, ex.graph_break_count) == (1, 0), ex.break_reasons
    # compiled steps give the eager result (same Philox stream)
    state = gen.get_state().clone()
    want_q, want_adv = sgld.sample(x_init=x), atk(x, y)
    gen.set_state(state)
    sgld.compile(backend="eager")
    atk.compile(backend="eager")
    got_q, got_adv = sgld.sample(x_init=x), atk(x, y)
    assert torch.allclose(got_q, want_q, atol=1e-6) and torch.equal(got_adv, want_adv)
    assert compiling.graph_counts()["graph_breaks"] == 0


def test_without_tracing_autograd_only_torch_breaks_the_sampler(fresh_dynamo):
    """dynamo's default: autograd.grad breaks the graph (torch's); nothing of ours does."""
    model = SmallCNN(1, 10, norm=None)
    sgld = ebjdat.SGLD(energy.ClassifierEnergy(model), n_steps=2, step_size=0.1, noise_std=0.01,
                       generator=PhiloxGenerator(0))
    with torch._dynamo.config.patch(trace_autograd_ops=False):
        ex = torch._dynamo.explain(lambda x: sgld.sample(x_init=x))(torch.rand(2, 1, 8, 8))
    reasons = [b.reason for b in ex.break_reasons]
    assert reasons and all("autograd" in r or "requires_grad_() intermediate" in r for r in reasons), reasons


def _copies(monkeypatch) -> list[bool]:
    """Records, for every tensor the ops bring into x's layout, whether that took a copy."""
    seen, like_x = [], library._like_x

    def spy(t, layout):
        out = like_x(t, layout)
        seen.append(out is not t)
        return out
    monkeypatch.setattr(library, "_like_x", spy)
    return seen


@pytest.mark.parametrize("fmt", [torch.channels_last, None])
def test_channels_last_chains_and_attack_inputs_copy_no_grad(monkeypatch, fmt):
    """A channels_last model: with memory_format=channels_last the chains and x_adv share its
    gradients' layout (no copies); without it, every step copies its grad (the test can fail)."""
    model = WideResNet(10, 1, 10, 3, norm="batch").to(memory_format=torch.channels_last)
    x, y = torch.rand(3, 3, 8, 8) * 2 - 1, torch.randint(0, 10, (3,))
    seen = _copies(monkeypatch)
    sgld = ebjdat.SGLD(energy.ClassifierEnergy(model), n_steps=2, step_size=0.1, noise_std=0.01,
                       generator=PhiloxGenerator(0), memory_format=fmt)
    atk = ebjdat.PGD(model, eps=0.1, alpha=0.02, steps=2, clamp=(-1.0, 1.0), generator=PhiloxGenerator(1),
                     memory_format=fmt)
    # the extension's host entry walks memory as laid out (the torch backend takes any
    # layout as it is, and so never copies)
    with ops.use_backend("cuda"):
        q, adv = sgld.sample(x_init=x), atk(x, y)
    if fmt is None:
        assert any(seen)
    else:
        assert seen and not any(seen)
        assert q.is_contiguous(memory_format=fmt) and adv.is_contiguous(memory_format=fmt)


def test_channels_last_sampler_draws_the_contiguous_result():
    """The layout changes memory order only: the chains and the Philox noise are the same."""
    model = SmallCNN(3, 10, norm=None)
    x = torch.rand(3, 3, 8, 8) * 2 - 1
    out = {}
    for fmt in (None, torch.channels_last):
        sgld = ebjdat.SGLD(energy.ClassifierEnergy(model), n_steps=2, step_size=0.1, noise_std=0.01,
                           generator=PhiloxGenerator(0), memory_format=fmt)
        out[fmt] = sgld.sample(x_init=x)
    assert torch.allclose(out[None], out[torch.channels_last], atol=1e-6)


def test_fast_mode_on_the_cpu_takes_channels_last_and_bf16():
    """bf16 autocast reaches the model's convolutions, the model is channels_last, and an
    iteration trains (the class-Gaussian chains stay float32 under autocast)."""
    t = Trainer(TrainConfig.preset("sadajem", precision="bf16", **TINY))
    seen = set()
    conv = t.model.body[0]
    conv.register_forward_hook(lambda m, inp, out: seen.add(out.dtype))
    m = t.train_step()
    assert seen == {torch.bfloat16}
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) or conv.weight.shape[1] == 1
    assert t.memory_format is torch.channels_last and torch.isfinite(m["loss"])
    assert t.buffer.data.dtype == torch.float32


def test_class_gaussian_draws_float32_under_autocast():
    x = torch.rand(40, 1, 4, 4)
    init = ClassGaussianInit.fit(x, torch.arange(40) % 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert init(6).dtype == torch.float32


@pytest.mark.parametrize("flags,want", [({"avx2", "avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16"),
                                        ({"avx2", "avx512f"}, "fp32")])
def test_precision_auto_follows_the_cpus_bf16_units(monkeypatch, flags, want):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    t = Trainer(TrainConfig.preset("sadajem", **TINY))
    assert t.precision == want and t.precision_reason.startswith("auto:")
    assert Trainer(TrainConfig.preset("sadajem", mode="published", **TINY)).precision == "fp32"


def test_compile_that_cannot_run_says_so_once(monkeypatch, capsys):
    monkeypatch.setattr(compiling, "unavailable", lambda device: "RuntimeError: no C++ compiler")
    t = Trainer(TrainConfig.preset("sadajem", compile=True, precision="fp32", **TINY))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--compile is not in effect (RuntimeError: no C++ compiler)" in err
    assert t.compile_info == {"requested": True, "active": False, "why": "RuntimeError: no C++ compiler",
                              "traces_autograd": compiling.traces_autograd()}
    assert t.net is t.model
