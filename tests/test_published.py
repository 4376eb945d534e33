"""Exactness: one iteration of ebjdat.published (the published computation:
perceptual distance summed per micro-batch, the attack after the clean forwards, warm-up
from lr 0) against the trainer in both modes, on a tiny WideResNet with BatchNorm, with
the same weights, batches, buffer, Gaussian init and random starts, fp32.

Published mode agrees on x_q, x_adv, the four loss terms, BatchNorm statistics and the
updated weights. Fast mode agrees on all of it but what its documented change touches:
it forwards x_pd and x_adv once after the attack where the published loop forwards x_pd
twice and x_adv twice, so BatchNorm's running statistics (and the attack of the next
iteration, which reads them) move less.
"""
import copy

import pytest
import torch

from ebjdat import ops
from ebjdat.published import PublishedLoop
from ebjdat.train import TrainConfig, Trainer

TINY = dict(model="wrn", depth=10, width=1, norm="batch", device="cpu", steps=1000, batch_size=8, label_batch_size=8,
            buffer_size=40, sgld_steps=2, pgd_steps=2, warmup_iters=2, threads=1,
            precision="fp32", channels_last=False)   # fast mode as the published fp32 NCHW math
TERMS = ("loss", "l_px", "l_pyx", "l_pxadv", "l_pyxadv")
TOL = dict(rtol=1e-5, atol=1e-6)


def _pair(mode):
    """A trainer and the published loop holding the same model, buffer, streams and starts."""
    t = Trainer(TrainConfig.preset("sadajem", mode=mode, **TINY))
    ds = t.train_set
    b = PublishedLoop(t.cfg, copy.deepcopy(t.model), ds.x, ds.y, ds.n_classes, "cpu", t.steps_per_epoch,
                      gaussian=(t.buffer.init.mean, t.buffer.init.chol))
    b.buffer = t.buffer.data.clone()
    b.gen_buf.set_state(t.buffer.generator.get_state())
    b.gen_init.set_state(t.buffer.init.generator.get_state())
    philox = ops.PhiloxGenerator(0, device="cpu")
    philox.set_state(t.philox.get_state())

    def start(x):  # the trainer's attack start stream
        xa = torch.empty_like(x)
        ops.pgd_init_(xa, x, eps=t.cfg.pgd_eps, clamp=(-1.0, 1.0), generator=philox)
        return xa
    b.random_start = start
    return t, b


def _recorded(obj, names):
    """Wrap obj's methods so that each call's output is kept in seen[name]."""
    seen = {}
    for name in names:
        fn = getattr(obj, name)

        def call(*a, _fn=fn, _name=name, **k):
            seen[_name] = out = _fn(*a, **k)
            return out
        setattr(obj, name, call)
    return seen


def _bn_stats(model):
    return [t for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
            for t in (m.running_mean, m.running_var)]


def _one_iteration(t, b):
    ours, theirs = _recorded(t, ("sample_q", "adversarial")), _recorded(b, ("sample_q", "attack"))
    x_lab, y_lab = next(t.lab_loader)
    x_pd, _ = next(t.pd_loader)
    with torch.random.fork_rng():
        a = t.train_step(x_lab, y_lab, x_pd)
    r = b.step(x_lab, y_lab, x_pd)
    return a, r, ours, theirs


@pytest.mark.parametrize("steps", [1, 2])
def test_published_mode_is_the_published_computation(steps):
    t, b = _pair("published")
    for _ in range(steps):
        a, r, ours, theirs = _one_iteration(t, b)
        torch.testing.assert_close(ours["sample_q"], theirs["sample_q"], **TOL)
        torch.testing.assert_close(ours["adversarial"], theirs["attack"], **TOL)
        for k in TERMS:
            torch.testing.assert_close(a[k], r[k], **TOL, msg=k)
    for p, q in zip(_bn_stats(t.model), _bn_stats(b.model)):
        torch.testing.assert_close(p, q, **TOL)
    for p, q in zip(t.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q, **TOL)
    assert t.step == b.t == steps


def test_fast_mode_differs_only_in_the_duplicated_forwards():
    t, b = _pair("fast")
    a, r, ours, theirs = _one_iteration(t, b)
    torch.testing.assert_close(ours["sample_q"], theirs["sample_q"], **TOL)
    torch.testing.assert_close(ours["adversarial"], theirs["attack"], **TOL)
    for k in TERMS:
        torch.testing.assert_close(a[k], r[k], **TOL, msg=k)
    for p, q in zip(t.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q, **TOL)
    # the documented difference: two train-mode forwards fewer after the attack in each of
    # SAM's two passes (the published loop's extra x_pd and x_adv forwards; the second
    # pass freezes the statistics but counts the batches), so the running statistics move less
    bn_t = [m for m in t.model.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    bn_b = [m for m in b.model.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    assert int(bn_b.num_batches_tracked) - int(bn_t.num_batches_tracked) == 2 * 2
    assert not torch.allclose(bn_t.running_mean, bn_b.running_mean, **TOL)


def test_published_warm_up_starts_at_zero():
    t, b = _pair("published")
    _one_iteration(t, b)
    assert t.optimizer.param_groups[0]["lr"] == b.opt.param_groups[0]["lr"] == 0.0


# ---------------------------------------------------------------- the published code's details
def test_presets_carry_the_published_details():
    """The published code's further details: SADA-JEM's x_pd unaugmented and its p(x) term
    watched; JEM++ holds 5,000 images out; JEM and JEM++ refresh the buffer every 100."""
    sada, jempp, jem = (TrainConfig.preset(v, dataset="cifar10") for v in ("sadajem", "jempp", "jem"))
    assert (sada.pd_augment, sada.bound_on, sada.refresh_every, sada.holdout) == (False, "l_px", 0, 0)
    assert (jempp.holdout, jempp.refresh_every, jempp.bound_on) == (5000, 100, "loss")
    assert (jem.refresh_every, jem.holdout) == (100, 0)
    assert (sada.pd_first, jempp.pd_first, jem.pd_first) == (True, True, False)   # f(x_pd) before sample_q
    stored = {k: v for k, v in sada.to_dict().items() if k != "pd_first"}
    assert TrainConfig.from_dict(stored).pd_first is False   # a run stored before the field sampled first
    assert TrainConfig.preset("jempp").holdout == 0   # the digits profile: 1,437 images, none held out
    # JEM++'s epoch: 45,000 images in batches of 64 (its decay milestones fall there)
    assert (50_000 - jempp.holdout) // jempp.batch_size == 703
    assert not TrainConfig.preset("sadajem").pd_augment   # the published choice; the digits have no augmentation
    t = Trainer(TrainConfig.preset("sadajem", mode="published", pd_augment=False, **TINY))
    assert not t.pd_loader.augment and t.lab_loader.augment
    with pytest.raises(ValueError, match="published mode runs the published fp32"):
        TrainConfig.preset("sadajem", mode="published", precision="bf16")


@pytest.mark.parametrize("mode", ["fast", "published"])
def test_buffer_refresh_every_n_iterations(mode):
    """After iteration N (N a multiple of refresh_every) one more sampler call on the buffer
    (in the sampler's train/eval mode): JEM's and JEM++'s extra refresh."""
    t = Trainer(TrainConfig.preset("jempp", mode=mode, refresh_every=2, **{**TINY, "sgld_steps": 1}))
    calls = []
    sample = t.chains.sample
    t.chains.sample = lambda n: calls.append(t.step) or sample(n)
    for _ in range(4):
        t.train_step()
    assert calls == [0, 1, 2, 2, 3, 4]   # the iteration's own draw, plus one after steps 2 and 4


def test_divergence_watch_published_per_iteration_fast_at_check():
    """Published mode reads SADA-JEM's |p(x) term| every iteration (the published loop's
    check); fast mode folds it on the device and raises at the next check (log time)."""
    from ebjdat.train import TrainingDiverged
    ref = Trainer(TrainConfig.preset("sadajem", mode="published", loss_bound=1e-12, **TINY))
    before = [p.detach().clone() for p in ref.model.parameters()]
    ref.adversarial = lambda *a: pytest.fail("the attack ran after the p(x) check failed")
    with pytest.raises(TrainingDiverged, match=r"\|the l_px term\| reached .* by step 1"):
        ref.train_step()
    # where SADA-JEM's code checks: after the p(x) forwards, before the attack and the update
    assert all(torch.equal(p, q) for p, q in zip(before, ref.model.parameters()))
    assert ref.step == 0
    fast = Trainer(TrainConfig.preset("sadajem", mode="fast", loss_bound=1e-12, **TINY))
    fast.train_step()
    fast.train_step()
    with pytest.raises(TrainingDiverged, match="by step 2"):
        fast.check_finite()
    fast.check_finite()   # the window starts again empty


# ---------------------------------------------------------------- the published order of forwards
# Written from the published training scripts, not from PublishedLoop: the model's forwards
# in one iteration, in order. "pd", "lab": x_pd and x_lab; "q": a batch of chains (each
# sampler step, then x_q); "adv": the attack's batches; "~": an eval-mode forward (runs of
# them, the attack's steps, are one entry); "|": SAM's second pass, BatchNorm frozen.
# SADA-JEM and JEM++ (plc "alltrain1", the default) forward x_pd before sample_q; JEM after
# it. After the attack all three forward x_pd and x_adv for p(x, x_adv), then x_adv for
# p(y | x_adv); fast mode forwards x_adv once and reuses the clean logits of x_pd.
ORDER = {  # (variant, mode): the forwards, with 2 SGLD steps
    ("sadajem", "published"): "pd q q q lab ~ pd adv adv | pd q lab pd adv adv",
    ("sadajem", "fast"): "pd q q q lab ~ adv | pd q lab adv",
    ("jempp", "published"): "pd q q q lab ~ pd adv adv",
    ("jem", "published"): "~ pd q lab ~ pd adv adv",
    ("jem", "fast"): "~ pd q lab ~ adv",
}
SIZES = dict(batch_size=6, label_batch_size=4)   # x_pd and x_q's batches apart from x_lab's


def _forwards(model, x_pd, x_lab, batch_size, trainer_like) -> list[str]:
    """The order in which ``model``'s first convolution sees its inputs during ``run()``."""
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))

    def label(x):
        if x.shape == x_pd.shape and torch.equal(x, x_pd):
            return "pd"
        if x.shape == x_lab.shape and torch.equal(x, x_lab):
            return "lab"
        return "q" if x.shape[0] == batch_size else "adv"

    def hook(_, args):
        name = label(args[0].detach()) if model.training else "~"
        if _frozen(model) and "|" not in seen:
            seen.append("|")
        if not (name == "~" and seen and seen[-1] == "~"):
            seen.append(name)
    handle = conv.register_forward_pre_hook(hook)
    try:
        trainer_like()
    finally:
        handle.remove()
    return " ".join(seen)


def _frozen(model) -> bool:
    """SAM's second pass: BatchNorm's running statistics frozen (momentum 0)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    return bool(bns) and all(m.momentum == 0 for m in bns)


@pytest.mark.parametrize("variant,mode", sorted(ORDER))
def test_forwards_follow_the_published_order(variant, mode):
    cfg = TrainConfig.preset(variant, mode=mode, **{**TINY, **SIZES, "norm": "batch"})
    t = Trainer(cfg)
    x_lab, y_lab = next(t.lab_loader)
    x_pd, _ = next(t.pd_loader)
    assert _forwards(t.model, x_pd, x_lab, cfg.batch_size, lambda: t.train_step(x_lab, y_lab, x_pd)) == ORDER[variant, mode]
    if mode == "published":   # the published loop too, independently of the trainer
        ds = t.train_set
        b = PublishedLoop(cfg, copy.deepcopy(t.model), ds.x, ds.y, ds.n_classes, "cpu", t.steps_per_epoch)
        assert _forwards(b.model, x_pd, x_lab, cfg.batch_size, lambda: b.step(x_lab, y_lab, x_pd)) == ORDER[variant, mode]


@pytest.mark.parametrize("variant", ["sadajem", "jempp"])
def test_published_loop_checks_where_the_code_checks(variant):
    """SADA-JEM's code reads |p(x) term| before the labelled forward and the attack; JEM++'s
    reads |loss| after the attack, before the backward. Neither updates the weights."""
    cfg = TrainConfig.preset(variant, mode="published", loss_bound=1e-12, **TINY)
    t = Trainer(cfg)
    ds = t.train_set
    b = PublishedLoop(cfg, copy.deepcopy(t.model), ds.x, ds.y, ds.n_classes, "cpu", t.steps_per_epoch)
    attacked = []
    attack = b.attack
    b.attack = lambda *a: attacked.append(1) or attack(*a)
    weights = [p.detach().clone() for p in b.model.parameters()]
    x_lab, y_lab = next(t.lab_loader)
    x_pd, _ = next(t.pd_loader)
    with pytest.raises(FloatingPointError, match="l_px" if variant == "sadajem" else "loss"):
        b.step(x_lab, y_lab, x_pd)
    assert attacked == ([] if variant == "sadajem" else [1])
    assert all(torch.equal(p, q) for p, q in zip(weights, b.model.parameters())) and b.t == 0
