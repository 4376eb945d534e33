"""ebjdat.PGD: equal to torchattacks, eps-ball and clamp, objectives, cost, side effects, checks."""
import copy

import pytest
import torch
import torch.nn.functional as F
import torchattacks  # a test dependency (installed with --no-deps): no silent skip
from torch import nn

from ebjdat import energy, ops
from ebjdat.attacks import PGD

from .conftest import gpu

B, K, SHAPE = 16, 10, (3, 8, 8)


def cnn(seed=0, bn=False):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 8, 3)] + ([nn.BatchNorm2d(8)] if bn else [])
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, K)]
    return nn.Sequential(*layers).eval()


def batch(seed=1, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((B,) + SHAPE, generator=g)
    y = torch.randint(0, K, (B,), generator=g)
    return x.to(device), y.to(device)


def linf(d):
    return d.flatten(1).abs().amax(1)


def l2(d):
    return d.flatten(1).norm(dim=1)


SETTINGS = [(8 / 255, 2 / 255, 10), (4 / 255, 1 / 255, 3), (0.1, 0.05, 1)]
L2_SETTINGS = [(1.0, 0.2, 10), (0.3, 0.1, 5), (0.05, 0.5, 2)]


@pytest.mark.parametrize("eps,alpha,steps", SETTINGS)
def test_linf_equals_torchattacks(eps, alpha, steps):
    model, (x, y) = cnn(), batch()
    ref = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    ours = PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    assert torch.equal(ours, ref)
    assert linf(ours - x).max() > 0


@pytest.mark.parametrize("eps,alpha,steps", L2_SETTINGS)
def test_l2_equals_torchattacks(eps, alpha, steps):
    model, (x, y) = cnn(), batch()
    ref = torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    ours = PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False, norm="l2")(x, y)
    # torchattacks projects with ``eps / ||d||``, which torch runs as reciprocal(||d||) * eps
    # (Tensor.__rdiv__): two roundings where ops.pgd_step_ rounds once, so the scale of a
    # projected sample can differ by an ulp (a quarter of random cases); the sum x + d
    # mostly rounds that away but nothing guarantees it; the per-sample norms' sum order
    # differs between backends too (TOL_REDUCE): x in [0, 1], so a few ulp of 1
    torch.testing.assert_close(ours, ref, rtol=0, atol=4 * 2.0**-24)


def test_targeted_ce_equals_torchattacks():
    model, (x, _) = cnn(), batch()
    target = (model(x).argmax(1) + 1) % K
    ta = torchattacks.PGD(model, eps=0.1, alpha=0.02, steps=10, random_start=False)
    ta.set_mode_targeted_by_label(quiet=True)
    ref = ta(x, target)
    ours = PGD(model, eps=0.1, alpha=0.02, steps=10, random_start=False, targeted=True)(x, target)
    assert torch.equal(ours, ref)
    with torch.no_grad():
        assert F.cross_entropy(model(ours), target) < F.cross_entropy(model(x), target)


@pytest.mark.parametrize("norm,dist,eps", [("linf", linf, 8 / 255), ("l2", l2, 0.5)])
@pytest.mark.parametrize("steps", [0, 4])
def test_random_start_in_ball_and_reproducible(norm, dist, eps, steps):
    model, (x, y) = cnn(), batch()

    def attack(seed):
        return PGD(model, eps=eps, alpha=eps / 4, steps=steps, norm=norm,
                   generator=ops.PhiloxGenerator(seed))(x, y)

    a, b, c = attack(3), attack(3), attack(4)
    assert (dist(a - x) <= eps * (1 + 1e-5)).all() and dist(a - x).min() > 0
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_generator_advances_by_the_counters_drawn():
    """A random start draws ceil(numel / 4) Philox counters (four elements a call)."""
    model, (x, y) = cnn(), batch()
    g = ops.PhiloxGenerator(0)
    atk = PGD(model, steps=1, generator=g)
    first = atk(x, y)
    assert g.offset == (x.numel() + 3) // 4 and not torch.equal(atk(x, y), first)


def test_robust_accuracy_drops_on_trained_model():
    torch.manual_seed(0)
    n, d, k = 512, 32, 4
    means = 0.5 + 0.1 * torch.randn(k, d)  # close classes: a small eps flips them
    y = torch.randint(0, k, (n,))
    x = (means[y] + 0.05 * torch.randn(n, d)).clamp(0, 1)
    model = nn.Linear(d, k)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    clean = (model(x).argmax(1) == y).float().mean()
    x_adv = PGD(model, eps=0.1, alpha=0.025, steps=10, generator=ops.PhiloxGenerator(0))(x, y)
    robust = (model(x_adv).argmax(1) == y).float().mean()
    assert clean > 0.95 and robust < 0.5


def test_energy_objective_raises_conditional_energy():
    model, (x, y) = cnn(), batch()
    x_adv = PGD(model, eps=0.1, alpha=0.02, steps=5, loss="energy", random_start=False)(x, y)
    with torch.no_grad():
        e0, e1 = energy.conditional(model(x), y), energy.conditional(model(x_adv), y)
    assert e1.sum() > e0.sum() and (e1 >= e0).float().mean() > 0.9


def test_ebjdat_objective_raises_j():
    model, (x, y) = cnn(), batch()

    def j(xa):
        clean, logits = model(x), model(xa)
        return logits.gather(1, y[:, None]).sum() + energy.perceptual_distance(clean, logits).sum()

    x_adv = PGD(model, eps=0.1, alpha=0.02, steps=5, loss="ebjdat", random_start=False)(x, y)
    with torch.no_grad():
        assert j(x_adv) > j(x)
        assert (x_adv - x).abs().max() <= 0.1 + 1e-6


def test_callable_objective():
    model, (x, y) = cnn(), batch()
    seen = []

    def logit0(logits, y_, x_adv, x_):
        seen.append((logits.shape, x_adv.shape, x_ is not None))
        return logits[:, 0]  # per-sample values: summed

    x_adv = PGD(model, eps=0.1, alpha=0.02, steps=3, loss=logit0, random_start=False)(x, y)
    assert len(seen) == 3 and seen[0] == ((B, K), (B,) + SHAPE, True)
    with torch.no_grad():
        assert (model(x_adv)[:, 0] > model(x)[:, 0]).all()


def test_targeted_moves_to_target():
    model, (x, _) = cnn(), batch()
    target = torch.full((B,), 3)
    x_adv = PGD(model, eps=0.3, alpha=0.05, steps=20, targeted=True, random_start=False)(x, target)
    with torch.no_grad():
        assert (model(x_adv).argmax(1) == 3).float().mean() > (model(x).argmax(1) == 3).float().mean()
        assert F.cross_entropy(model(x_adv), target) < F.cross_entropy(model(x), target)


@pytest.mark.parametrize("loss,extra", [("ce", 0), ("energy", 0), ("ebjdat", 1)])
def test_forward_count(loss, extra):
    model, (x, y) = cnn(), batch()
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    PGD(model, steps=7, loss=loss)(x, y)
    assert calls == [B] * (7 + extra)  # whole batch at once


@pytest.mark.parametrize("train", [False, True])
def test_no_side_effects(train):
    model, (x, y) = cnn(bn=True), batch()
    model.train(train)
    x0, y0 = x.clone(), y.clone()
    for loss in ("ce", "ebjdat"):
        out = PGD(model, steps=3, loss=loss)(x, y)
        assert all(m.training == train for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert not out.requires_grad and out.grad_fn is None and out.data_ptr() != x.data_ptr()


def test_works_under_no_grad_and_inference_mode():
    model, (x, y) = cnn(), batch()
    ref = PGD(model, steps=3, random_start=False)(x, y)
    with torch.no_grad():
        assert torch.equal(PGD(model, steps=3, random_start=False)(x, y), ref)
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()
        assert torch.equal(PGD(model, steps=3, random_start=False)(xi, yi), ref)


def test_uses_classify_and_int32_labels():
    class Jem(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = cnn()

        def forward(self, x):  # not the logits
            raise AssertionError("forward called instead of classify")

        def classify(self, x):
            return self.net(x)

    jem, (x, y) = Jem().eval(), batch()
    ours = PGD(jem, steps=2, random_start=False)(x, y.int())
    assert torch.equal(ours, PGD(jem.net, steps=2, random_start=False)(x, y))


def test_no_projection_exceeds_eps():
    model, (x, y) = cnn(), batch()
    x_adv = PGD(model, eps=None, alpha=0.05, steps=6, random_start=False, clamp=None)(x, y)
    assert linf(x_adv - x).max() > 0.05 * 5
    x_l2 = PGD(model, eps=None, alpha=0.5, steps=4, random_start=False, norm="l2", clamp=None)(x, y)
    assert l2(x_l2 - x).min() > 1.0


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(loss="hinge"), ValueError, "loss"),
    (dict(norm="l1"), ValueError, "norm"),
    (dict(eps=-0.1), ValueError, "eps"),
    (dict(alpha=-1.0), ValueError, "alpha"),
    (dict(steps=-1), ValueError, "steps"),
    (dict(steps=2.0), TypeError, "steps"),
    (dict(eps=None), ValueError, "eps"),  # random_start needs eps
    (dict(generator=torch.Generator()), TypeError, "generator"),
    (dict(clamp=(1.0, 0.0)), ValueError, "clamp"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        PGD(cnn(), **kwargs)


@pytest.mark.parametrize("make,exc,match", [
    (lambda x, y: ((x * 255).long(), y), TypeError, "x must be"),
    (lambda x, y: (x, y.float()), TypeError, "y must be an integer"),
    (lambda x, y: (x, y.bool()), TypeError, "y must be an integer"),
    (lambda x, y: (x, y[:, None]), ValueError, "y must have shape"),
    (lambda x, y: (x, y[:-1]), ValueError, "batch sizes differ"),
    (lambda x, y: (x, torch.empty_like(y, device="meta")), ValueError, "y is on meta"),
    (lambda x, y: (x, y + K), ValueError, "y has labels outside"),
    (lambda x, y: (x, y - K), ValueError, "y has labels outside"),
])
@pytest.mark.parametrize("loss", ["ce", "ebjdat"])
def test_bad_inputs(make, exc, match, loss):
    with pytest.raises(exc, match=match):
        PGD(cnn(), steps=1, loss=loss)(*make(*batch()))


def test_bad_model_outputs_and_devices():
    x, y = batch()
    with pytest.raises(ValueError, match="logits"):
        PGD(lambda t: t.flatten(1).sum(1), steps=1)(x, y)
    with pytest.raises(ValueError, match="cuda_graph=True needs CUDA"):
        PGD(cnn(), cuda_graph=True)(x, y)
    with pytest.raises(TypeError, match="must return a Tensor"):
        PGD(cnn(), steps=1, loss=lambda *a: 1.0)(x, y)


@gpu
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("loss,norm", [("ce", "linf"), ("ebjdat", "linf"), ("ce", "l2")])
def test_cuda_graph_matches_eager(train, loss, norm):
    det, bench = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        eager_model = cnn(bn=True).cuda().train(train)
        graph_model = copy.deepcopy(eager_model)
        x, y = batch(device="cuda")
        kw = dict(eps=8 / 255 if norm == "linf" else 0.5, alpha=2 / 255 if norm == "linf" else 0.1,
                  steps=5, loss=loss, norm=norm)
        eager = PGD(eager_model, generator=ops.PhiloxGenerator(7, "cuda"), **kw)
        graph = PGD(graph_model, generator=ops.PhiloxGenerator(7, "cuda"), cuda_graph=True, **kw)
        outs = []
        for _ in range(3):  # capture + replay, then replays: fresh noise each call, stats alike
            a, b = eager(x, y), graph(x, y)
            torch.testing.assert_close(b, a)
            outs.append(b)
        assert not torch.equal(outs[0], outs[1])
        assert len(graph._graphs) == 1
        for be, bg in zip(eager_model.buffers(), graph_model.buffers()):
            torch.testing.assert_close(bg, be)
        assert all(p.grad is None for p in graph_model.parameters())
        assert all(m.training == train for m in graph_model.modules())
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = det, bench
