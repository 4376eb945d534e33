"""The objective as a table of terms (ebjdat.objectives.TERMS): the loss equals the
documented formula, and the metrics, the config's checks, the watched value and the
trainer's choice of work all follow the table."""
import pytest
import torch
import torch.nn.functional as F

from ebjdat import objectives
from ebjdat.objectives import TERMS, Term
from ebjdat.runs.config import TrainConfig
from ebjdat.train import Trainer

SMALL = dict(device="cpu", buffer_size=64, batch_size=8, label_batch_size=8, sgld_steps=1, pgd_steps=1)


def _logits(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g) for s in shapes]


def test_loss_is_the_documented_formula():
    cfg = TrainConfig.preset("sadajem", w_px=0.7, w_pyx=1.3, w_pxadv=0.1, w_pyxadv=0.9)
    pd, q, lab, adv = _logits((6, 10), (6, 10), (4, 10), (4, 10))
    y = torch.tensor([0, 3, 9, 1])
    f = lambda t: torch.logsumexp(t, 1).mean()  # noqa: E731
    want = (0.7 * -(f(pd) - f(q)) + 1.3 * F.cross_entropy(lab, y)
            + 0.1 * -(f(pd) - f(adv)) + 0.9 * F.cross_entropy(adv, y))
    loss, terms = objectives.objective(cfg, lambda x: x, {"pd": pd, "q": q, "lab": lab}, None, adv, y)
    torch.testing.assert_close(loss, want)
    assert tuple(terms) == objectives.METRICS[1:]
    torch.testing.assert_close(terms["l_pyx"], F.cross_entropy(lab, y))


def test_a_term_with_weight_zero_costs_nothing_and_logs_zero():
    cfg = TrainConfig.preset("sadajem", objective="standard")   # only p(y | x)
    assert objectives.reads(cfg) == {"lab"}
    (lab,) = _logits((4, 10))
    loss, terms = objectives.objective(cfg, lambda x: None if x is None else pytest.fail("forwarded"),
                                       {"pd": None, "q": None, "lab": lab}, None, None, torch.zeros(4, dtype=torch.long))
    assert float(terms["l_px"]) == float(terms["l_pyxadv"]) == 0.0
    torch.testing.assert_close(loss, terms["l_pyx"])
    t = Trainer(TrainConfig.preset("sadajem", objective="standard", **SMALL))
    assert t.chains.sample(4) is None and t.attack(None, None) is None   # no sampler, no attack


def test_the_table_drives_the_metrics_the_checks_and_the_watch():
    assert objectives.METRICS == ("loss", "l_px", "l_pyx", "l_pxadv", "l_pyxadv")
    with pytest.raises(ValueError, match=r"w_pxadv \(the weight of l_pxadv\) must be a finite number >= 0"):
        TrainConfig.preset("sadajem", w_pxadv=-0.1)
    with pytest.raises(ValueError, match="every weight .* is 0: nothing to train"):
        TrainConfig.preset("sadajem", w_px=0.0, w_pyx=0.0, w_pxadv=0.0, w_pyxadv=0.0)
    with pytest.raises(ValueError, match="bound_on must be one of"):
        TrainConfig.preset("sadajem", bound_on="l_gan")
    assert objectives.watched(TrainConfig.preset("sadajem")) == "l_px"
    assert objectives.watched(TrainConfig.preset("sadajem", objective="at")) == "loss"   # p(x) off
    assert objectives.watched(TrainConfig.preset("jem", bound_on="l_pyxadv")) == "l_pyxadv"


def test_a_new_term_is_one_entry(monkeypatch):
    """A term added to TERMS (here a second p(y | x) reading x_adv's logits, weighted by an
    existing field for the test) enters the loss, the terms and the work to do."""
    extra = Term("l_extra", "w_pyx", ("adv",), lambda adv, y: adv.square().mean())
    monkeypatch.setattr(objectives, "TERMS", TERMS + (extra,))
    cfg = TrainConfig.preset("sadajem", objective="standard")   # w_pyx only: now reads x_adv too
    assert objectives.reads(cfg) == {"lab", "adv"}
    lab, adv = _logits((4, 10), (4, 10))
    y = torch.zeros(4, dtype=torch.long)
    loss, terms = objectives.objective(cfg, lambda x: x, {"pd": None, "q": None, "lab": lab}, None, adv, y)
    torch.testing.assert_close(terms["l_extra"], adv.square().mean())
    torch.testing.assert_close(loss, cfg.w_pyx * (F.cross_entropy(lab, y) + adv.square().mean()))
