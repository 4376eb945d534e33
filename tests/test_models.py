"""ebjdat.models: SmallCNN and WideResNet shapes, BatchNorm settings, and SmallCNN learning
the embedded digits."""
import pytest
import torch
from torch import nn

from ebjdat.data import Loader, load_dataset
from ebjdat.models import SmallCNN, WideResNet


def _models(in_channels):
    return [SmallCNN(in_channels=in_channels, n_classes=7),
            WideResNet(depth=10, width=2, n_classes=7, in_channels=in_channels, norm="batch")]


@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (3, 3, 32, 32), (2, 1, 4, 4), (2, 3, 12, 20)])
def test_logit_shapes_and_classify_is_forward(shape):
    torch.manual_seed(0)
    x = torch.rand(shape) * 2 - 1
    for m in _models(shape[1]):
        m.eval()
        out = m(x)
        assert out.shape == (shape[0], 7) and out.dtype == torch.float32
        assert torch.equal(m.classify(x), out)
        assert m.features(x).shape == (shape[0], m.feature_dim)


def test_batchnorm_momentum_and_norm_none():
    for m in _models(1):
        bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
        assert bns and all(bn.momentum == 0.9 for bn in bns)
    assert len([mod for mod in SmallCNN().modules() if isinstance(mod, nn.BatchNorm2d)]) == 3
    for m in (SmallCNN(norm=None), WideResNet(depth=10, width=1)):
        assert not any(isinstance(mod, nn.BatchNorm2d) for mod in m.modules())
    with pytest.raises(ValueError, match="norm"):
        SmallCNN(norm="layer")


def test_small_cnn_layout():
    m = SmallCNN(in_channels=1, n_classes=10, width=32, leak=0.2)
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == \
        [(1, 32, 1), (32, 64, 2), (64, 64, 2)]
    assert (m.head.in_features, m.head.out_features) == (64, 10)
    assert all(a.negative_slope == 0.2 for a in m.modules() if isinstance(a, nn.LeakyReLU))


@pytest.mark.parametrize("depth", [9, 11, 28 + 1])
def test_wideresnet_rejects_bad_depth(depth):
    with pytest.raises(ValueError, match=r"6n \+ 4"):
        WideResNet(depth=depth)


def test_small_cnn_learns_digits():
    torch.manual_seed(0)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    loader = Loader(train, 64, generator=torch.Generator().manual_seed(0))
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(200):
        x, y = next(loader)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(test.x).argmax(1) == test.y).float().mean().item()
    assert acc >= 0.9, f"test accuracy {acc:.3f} after 200 steps"
