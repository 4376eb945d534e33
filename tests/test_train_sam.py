"""SAM / ASAM against a direct re-implementation of the formulas (Foret et al.; Kwon et al.)."""
import io

import pytest
import torch
from torch import nn

from ebjdat.train.sam import SAM

LR, MOM, WD = 0.05, 0.9, 5e-4


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


def batch(i):
    g = torch.Generator().manual_seed(100 + i)
    return torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)


def loss_fn(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


def manual_perturbation(params, grads, rho, adaptive):
    """e_w = (w^2 if adaptive else 1) * g * rho / (||(|w| if adaptive else 1) * g||_2 + 1e-12)."""
    t = [(w.abs() if adaptive else 1.0) * g for w, g in zip(params, grads)]
    norm = torch.sqrt(sum((v.double() ** 2).sum() for v in t)).float()
    return [(w * w if adaptive else 1.0) * g * rho / (norm + 1e-12) for w, g in zip(params, grads)]


class ManualSGD:
    """torch.optim.SGD's update, spelled out: d = g + wd w; b = mom b + d (b = d first); w -= lr b."""

    def __init__(self, n):
        self.buf = [None] * n

    def step(self, params, grads, lr=LR):
        out = []
        for i, (w, g) in enumerate(zip(params, grads)):
            d = g + WD * w
            self.buf[i] = d.clone() if self.buf[i] is None else MOM * self.buf[i] + d
            out.append(w - lr * self.buf[i])
        return out


def grads_at(model, params, x, y):
    with torch.no_grad():
        for p, v in zip(model.parameters(), params):
            p.copy_(v)
    model.zero_grad()
    loss_fn(model, x, y).backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("adaptive", [False, True])
def test_matches_manual_formulas(adaptive):
    rho = 2.0 if adaptive else 0.05
    model, ref = make_model(), make_model()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, adaptive=adaptive, lr=LR, momentum=MOM, weight_decay=WD)
    w = [p.detach().clone() for p in ref.parameters()]
    sgd = ManualSGD(len(w))
    for it in range(3):
        x, y = batch(it)
        g = grads_at(ref, w, x, y)
        e = manual_perturbation(w, g, rho, adaptive)
        w_adv = [a + b for a, b in zip(w, e)]
        g_adv = grads_at(ref, w_adv, x, y)
        w = sgd.step(w, g_adv)

        opt.zero_grad()
        loss_fn(model, x, y).backward()
        opt.first_step(zero_grad=True)
        for p, v in zip(model.parameters(), w_adv):
            torch.testing.assert_close(p.detach(), v, rtol=1e-5, atol=1e-6)
        loss_fn(model, x, y).backward()
        opt.second_step()
        for p, v in zip(model.parameters(), w):
            torch.testing.assert_close(p.detach(), v, rtol=1e-5, atol=1e-6)


def test_adaptive_default_follows_rho():
    m = make_model()
    assert SAM(m.parameters(), torch.optim.SGD, lr=0.1).param_groups[0]["adaptive"] is True  # rho = 2
    assert SAM(m.parameters(), torch.optim.SGD, rho=0.05, lr=0.1).param_groups[0]["adaptive"] is False
    assert SAM(m.parameters(), torch.optim.SGD, rho=2.0, adaptive=False, lr=0.1).param_groups[0]["adaptive"] is False


def test_second_step_restores_exactly_before_base_step():
    model = make_model()
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.0)  # lr 0: the base step changes nothing
    x, y = batch(0)
    loss_fn(model, x, y).backward()
    opt.first_step(zero_grad=True)
    assert any(not torch.equal(p, w) for p, w in zip(model.parameters(), w0))
    loss_fn(model, x, y).backward()
    opt.second_step()
    for p, w in zip(model.parameters(), w0):
        assert torch.equal(p.detach(), w)


def test_lr_follows_param_group_edits():
    model = make_model()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    assert opt.param_groups is opt.base_optimizer.param_groups
    opt.param_groups[0]["lr"] = 0.02
    assert opt.base_optimizer.param_groups[0]["lr"] == 0.02
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1], gamma=0.2)
    x, y = batch(0)
    loss_fn(model, x, y).backward()
    opt.first_step(zero_grad=True)
    loss_fn(model, x, y).backward()
    opt.second_step(zero_grad=True)
    sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.004)
    # and the base's step really uses it: with lr 0 the weights stay
    opt.param_groups[0]["lr"] = 0.0
    opt.base_optimizer.state.clear()
    w0 = [p.detach().clone() for p in model.parameters()]
    loss_fn(model, x, y).backward()
    opt.first_step(zero_grad=True)
    loss_fn(model, x, y).backward()
    opt.second_step()
    for p, w in zip(model.parameters(), w0):
        assert torch.equal(p.detach(), w)


def run_steps(model, opt, its):
    for it in its:
        x, y = batch(it)
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        opt.first_step(zero_grad=True)
        loss_fn(model, x, y).backward()
        opt.second_step()


@pytest.mark.parametrize("adaptive", [False, True])
def test_state_dict_round_trip_through_weights_only(adaptive):
    kw = {"rho": 2.0 if adaptive else 0.05, "adaptive": adaptive, "lr": LR, "momentum": MOM, "weight_decay": WD}
    a = make_model()
    opt_a = SAM(a.parameters(), torch.optim.SGD, **kw)
    run_steps(a, opt_a, range(6))

    b = make_model()
    opt_b = SAM(b.parameters(), torch.optim.SGD, **kw)
    run_steps(b, opt_b, range(3))
    f = io.BytesIO()
    torch.save({"model": b.state_dict(), "opt": opt_b.state_dict()}, f)
    f.seek(0)
    ck = torch.load(f, weights_only=True)

    c = make_model(seed=1)  # different weights: everything must come from the checkpoint
    opt_c = SAM(c.parameters(), torch.optim.SGD, rho=0.5, adaptive=not adaptive, lr=1.0)
    c.load_state_dict(ck["model"])
    opt_c.load_state_dict(ck["opt"])
    assert opt_c.param_groups is opt_c.base_optimizer.param_groups
    assert opt_c.param_groups[0]["adaptive"] is adaptive and opt_c.param_groups[0]["lr"] == LR
    assert all("momentum_buffer" in opt_c.base_optimizer.state[p] for p in c.parameters())
    run_steps(c, opt_c, range(3, 6))
    for p, q in zip(a.parameters(), c.parameters()):
        assert torch.equal(p, q)


def test_no_host_sync(monkeypatch):
    model = make_model()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, momentum=MOM, weight_decay=WD)
    x, y = batch(0)
    loss_fn(model, x, y).backward()

    def boom(*a, **k):
        raise AssertionError("host synchronisation inside a SAM step")

    with monkeypatch.context() as mp:
        for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
            mp.setattr(torch.Tensor, name, boom)
        opt.first_step(zero_grad=True)
    loss_fn(model, x, y).backward()
    with monkeypatch.context() as mp:
        for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
            mp.setattr(torch.Tensor, name, boom)
        opt.second_step()


@pytest.mark.parametrize("adaptive", [False, True])
def test_params_without_grad_skipped(adaptive):
    model = make_model()
    frozen = model[0].bias
    opt = SAM(model.parameters(), torch.optim.SGD, rho=2.0 if adaptive else 0.05, adaptive=adaptive,
              lr=LR, momentum=MOM)
    x, y = batch(0)
    loss_fn(model, x, y).backward()
    frozen.grad = None
    active = [p for p in model.parameters() if p is not frozen]
    w = [p.detach().clone() for p in active]
    e = manual_perturbation(w, [p.grad for p in active], opt.param_groups[0]["rho"], adaptive)
    b0 = frozen.detach().clone()
    opt.first_step()
    assert torch.equal(frozen, b0)
    for p, v, d in zip(active, w, e):  # the norm leaves the grad-less param out
        torch.testing.assert_close(p.detach(), v + d)
    opt.zero_grad()
    loss_fn(model, x, y).backward()
    frozen.grad = None
    opt.second_step()
    assert torch.equal(frozen, b0)
    assert "momentum_buffer" not in opt.base_optimizer.state[frozen]


def test_per_group_rho_and_closure_step():
    model, ref = make_model(), make_model()
    groups = lambda m: [{"params": m[0].parameters(), "rho": 0.1},
                        {"params": m[2].parameters(), "rho": 3.0}]
    opt = SAM(groups(model), torch.optim.SGD, lr=LR)
    assert [g["adaptive"] for g in opt.param_groups] == [False, True]
    ref_opt = SAM(groups(ref), torch.optim.SGD, lr=LR)
    x, y = batch(0)

    def closure():
        opt.zero_grad()
        loss = loss_fn(model, x, y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert torch.isfinite(loss)
    run_steps(ref, ref_opt, [0])
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)


def test_argument_errors():
    m = make_model()
    with pytest.raises(TypeError, match="base_optimizer_cls"):
        SAM(m.parameters(), torch.optim.SGD(m.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="rho"):
        SAM(m.parameters(), torch.optim.SGD, rho=-1.0, lr=0.1)
    opt = SAM(m.parameters(), torch.optim.SGD, lr=0.1)
    with pytest.raises(RuntimeError, match="first_step"):
        opt.second_step()
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()
