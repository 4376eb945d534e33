"""ebjdat.energy: marginal and conditional energies, perceptual distance, ClassifierEnergy."""
import pytest
import torch
from torch import nn

from ebjdat import energy


def logits(seed=0, b=6, k=5, scale=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(b, k, generator=g)).to(dtype)


def test_marginal_is_minus_logsumexp():
    lg = logits()
    direct = -torch.log(torch.exp(lg).sum(1))
    torch.testing.assert_close(energy.marginal(lg), direct)
    big = torch.tensor([[1000.0, 1000.0]])  # stable where the direct formula overflows
    torch.testing.assert_close(energy.marginal(big), torch.tensor([-1000.0 - 0.6931471805599453]))


def test_conditional_is_minus_logit_y():
    lg, y = logits(), torch.tensor([0, 4, 2, 2, 1, 3])
    e = energy.conditional(lg, y)
    assert e.shape == (6,)
    torch.testing.assert_close(e, torch.stack([-lg[i, y[i]] for i in range(6)]))
    assert (energy.conditional(lg, y) >= energy.marginal(lg)).all()  # logit_y <= logsumexp


def test_perceptual_distance_matches_formula():
    a, b = logits(1), logits(2)
    direct = torch.stack([((a[i] / a[i].norm() - b[i] / b[i].norm()) ** 2).sum() for i in range(6)])
    p = energy.perceptual_distance(a, b)
    assert p.shape == (6,)
    torch.testing.assert_close(p, direct)
    torch.testing.assert_close(p, energy.perceptual_distance(b, a))  # symmetric


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_perceptual_distance_range(dtype):
    a = logits(3, b=200, dtype=dtype)
    assert torch.equal(energy.perceptual_distance(a, a), torch.zeros(200, dtype=dtype))
    # invariant to a positive rescaling of either side
    assert energy.perceptual_distance(a, 2.5 * a).abs().max() < 1e-6
    p = energy.perceptual_distance(a, logits(4, b=200, dtype=dtype))
    assert (p >= 0).all() and (p <= 4).all()
    torch.testing.assert_close(energy.perceptual_distance(a, -a), torch.full((200,), 4.0, dtype=dtype))


def test_perceptual_distance_gradient_flows_to_both():
    a, b = logits(5).requires_grad_(), logits(6).requires_grad_()
    energy.perceptual_distance(a, b).sum().backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_logits_of_and_classifier_energy_use_classify():
    lin = nn.Linear(4, 3)

    class Jem(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return torch.zeros(x.shape[0], 99)  # something else: must not be used

        def classify(self, x):
            return self.lin(x)

    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        lg = lin(x)
        assert torch.equal(energy.logits_of(Jem(), x), lg)
        assert torch.equal(energy.logits_of(lin, x), lg)  # no classify: forward
        fn = energy.ClassifierEnergy(Jem())
        assert torch.equal(fn(x), energy.marginal(lg))
        assert torch.equal(fn(x, y), energy.conditional(lg, y))
        assert torch.equal(energy.ClassifierEnergy(lin)(x, y), energy.conditional(lg, y))


def test_classifier_energy_is_a_module_holding_the_model():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    fn = energy.ClassifierEnergy(model)
    assert isinstance(fn, nn.Module) and any(m is model for m in fn.modules())
    fn.eval()
    assert not model.training
