"""ebjdat.data: the embedded digits, CIFAR pickles, synthetic data and the device Loader."""
import io
import pickle
import sys
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ebjdat.data import DATASETS, Dataset, Loader, load_dataset

from .conftest import gpu

DEVICES = ["cpu", pytest.param("cuda", marks=gpu)]


# ---- digits ------------------------------------------------------------------------------
def _rows(ds):
    """Multiset of (raw 0..16 image bytes, label) of a digits Dataset."""
    raw = torch.round((ds.x + 1) / 2 * 16).to(torch.uint8).numpy()
    return Counter((r.tobytes(), int(c)) for r, c in zip(raw, ds.y.numpy()))


def test_digits_shapes_range_and_counts():
    tr, te = load_dataset("digits", "train"), load_dataset("digits")
    assert tr.x.shape == te.x.shape == (1438, 1, 8, 8)  # default split is train
    te = load_dataset("digits", "test")
    assert te.x.shape == (359, 1, 8, 8) and len(te) == 359
    for ds in (tr, te):
        assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
        assert ds.x.min() == -1.0 and ds.x.max() == 1.0
        assert (ds.image_size, ds.channels, ds.n_classes, ds.name) == (8, 1, 10, "digits")
        assert (ds.pad, ds.flip) == (0, False)   # no augmentation: docs/generation-digits.md
    counts = torch.bincount(te.y, minlength=10)
    total = counts + torch.bincount(tr.y, minlength=10)
    # Stratified 80/20: every class holds round(0.2 * its count) test images.
    assert torch.equal(counts, torch.round(0.2 * total.double()).long())


def test_digits_equal_sklearn_and_splits_partition_it():
    from sklearn.datasets import load_digits
    sk = load_digits()
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    want = Counter((img.astype(np.uint8).tobytes(), int(c)) for img, c in zip(sk.images, sk.target))
    assert len(tr) + len(te) == len(sk.target) == 1797
    assert _rows(tr) + _rows(te) == want  # together exactly sklearn's data, nothing twice
    # values are exactly (v / 16 - 0.5) / 0.5
    assert torch.equal(tr.x, (torch.round((tr.x + 1) / 2 * 16) / 16 - 0.5) / 0.5)


def test_digits_split_is_stable():
    a, b = load_dataset("digits", "test"), load_dataset("digits", "test", seed=123)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)  # seed only picks n-subsets


def test_digits_resize_and_pad():
    base = load_dataset("digits", "test")
    up = load_dataset("digits", "test", image_size=16)
    assert up.x.shape == (359, 1, 16, 16) and up.image_size == 16
    ref = F.interpolate(base.x, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up.x, ref)
    assert up.x.min() >= -1 and up.x.max() <= 1
    padded = load_dataset("digits", "test", image_size=10)
    assert padded.x.shape == (359, 1, 10, 10)
    assert torch.equal(padded.x[:, :, 1:9, 1:9], base.x)
    border = torch.ones(10, 10, dtype=torch.bool)
    border[1:9, 1:9] = False
    assert (padded.x[:, :, border] == -1).all()
    assert load_dataset("digits", image_size=8).x.shape[-1] == 8
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("digits", image_size=6)


def test_subset_n():
    a = load_dataset("digits", n=100, seed=1)
    b = load_dataset("digits", n=100, seed=1)
    c = load_dataset("digits", n=100, seed=2)
    assert len(a) == 100 and torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    with pytest.raises(ValueError, match="n=5000"):
        load_dataset("digits", n=5000)
    with pytest.raises(ValueError, match="n must"):
        load_dataset("digits", n=0)


def test_bad_names_and_splits():
    with pytest.raises(ValueError, match="known: digits, cifar10, cifar100, svhn, stl10, tinyimagenet, "
                       "imagenet32, imagenet64, imagefolder, synthetic"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", "val")
    assert DATASETS == ("digits", "cifar10", "cifar100", "svhn", "stl10", "tinyimagenet", "imagenet32",
                        "imagenet64", "imagefolder", "synthetic")


# ---- synthetic ---------------------------------------------------------------------------
def test_synthetic_deterministic():
    a, b = load_dataset("synthetic", seed=3), load_dataset("synthetic", seed=3)
    assert a.x.shape == (2048, 3, 32, 32) and a.n_classes == 10 and a.pad == 0 and not a.flip
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert a.x.min() >= -1 and a.x.max() <= 1 and a.y.min() >= 0 and a.y.max() <= 9
    t = load_dataset("synthetic", "test", seed=3)
    assert len(t) == 512 and not torch.equal(t.x[:4], a.x[:4])
    assert not torch.equal(load_dataset("synthetic", seed=4).x[:4], a.x[:4])
    s = load_dataset("synthetic", image_size=16, n=10)
    assert s.x.shape == (10, 3, 16, 16)


# ---- CIFAR (a tiny fake in the standard pickle format) ------------------------------------
def _batch(path, n, label_key, n_classes, seed, extra=None):
    rng = np.random.default_rng(seed)
    d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
         label_key: [int(v) for v in rng.integers(0, n_classes, n)], b"batch_label": b"fake"}
    d.update(extra or {})
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)
    return d


def _fake_cifar10(root):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train = [_batch(folder / f"data_batch_{i}", 2, b"labels", 10, i) for i in range(1, 6)]
    test = _batch(folder / "test_batch", 3, b"labels", 10, 9)
    return folder, train, test


def _expected(batches, key):
    data = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
    x = (torch.from_numpy(data).float() / 255 - 0.5) / 0.5
    return x, torch.tensor([v for b in batches for v in b[key]], dtype=torch.int64)


def test_cifar10_from_parent_and_batches_folder(tmp_path):
    folder, train, test = _fake_cifar10(tmp_path)
    x, y = _expected(train, b"labels")
    for root in (tmp_path, folder, str(folder)):
        ds = load_dataset("cifar10", "train", root=root)
        assert ds.x.shape == (10, 3, 32, 32) and ds.n_classes == 10 and ds.name == "cifar10"
        assert (ds.pad, ds.flip) == (4, True)
        assert torch.equal(ds.x, x) and torch.equal(ds.y, y)
    # CHW row layout: the first 1024 bytes are the red plane (row-major), then green
    raw = train[0][b"data"][0]
    for (c, i, j), k in (((0, 0, 1), 1), ((0, 1, 0), 32), ((1, 0, 0), 1024), ((2, 31, 31), 3071)):
        assert ds.x[0, c, i, j].item() == pytest.approx((raw[k] / 255 - 0.5) / 0.5, abs=1e-6)
    te = load_dataset("cifar10", "test", root=tmp_path)
    xt, yt = _expected([test], b"labels")
    assert torch.equal(te.x, xt) and torch.equal(te.y, yt)
    assert load_dataset("cifar10", root=tmp_path, image_size=64).x.shape == (10, 3, 64, 64)
    assert len(load_dataset("cifar10", root=tmp_path, n=4)) == 4


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    coarse = {b"coarse_labels": [0, 0, 0, 0]}
    tr = _batch(folder / "train", 4, b"fine_labels", 100, 1, coarse)
    te = _batch(folder / "test", 2, b"fine_labels", 100, 2, {b"coarse_labels": [0, 0]})
    for root in (tmp_path, folder):
        ds = load_dataset("cifar100", "train", root=root)
        x, y = _expected([tr], b"fine_labels")
        assert ds.n_classes == 100 and torch.equal(ds.x, x) and torch.equal(ds.y, y)
    assert torch.equal(load_dataset("cifar100", "test", root=folder).y,
                       torch.tensor(te[b"fine_labels"]))


def test_cifar_missing_says_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*download=True"):
        load_dataset("cifar10", root=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python"):
        load_dataset("cifar100", "test", root=tmp_path)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(FileNotFoundError, match="torchvision is not importable"):
        load_dataset("cifar10", root=tmp_path, download=True)


def test_cifar_partial_folder_is_missing(tmp_path):
    folder, _, _ = _fake_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        load_dataset("cifar10", root=tmp_path)
    assert len(load_dataset("cifar10", "test", root=tmp_path)) == 3  # test files are all there


# ---- Loader ------------------------------------------------------------------------------
def _indexed(n=50, size=4, pad=0, flip=False):
    """x[i] == i everywhere, y[i] == i: a batch tells which samples it holds."""
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, size, size).contiguous()
    return Dataset(x, torch.arange(n), n, "indexed", pad=pad, flip=flip)


def _gen(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("drop_last", [True, False])
def test_loader_each_sample_once_per_epoch(device, drop_last):
    ds = _indexed(50)
    ld = Loader(ds, 10 if drop_last else 7, device=device, drop_last=drop_last, generator=_gen(0, device))
    assert iter(ld) is ld and ld.steps_per_epoch == (5 if drop_last else 8)
    orders = []
    for epoch in range(3):
        assert ld.epoch == epoch and ld.position == 0
        seen = []
        for _ in range(ld.steps_per_epoch):
            x, y = next(ld)
            assert x.device.type == device and y.device.type == device
            assert x.shape[1:] == (1, 4, 4) and y.dtype == torch.int64
            assert torch.equal(x[:, 0, 0, 0].long(), y)  # x and y stay paired
            seen.append(y.cpu())
        seen = torch.cat(seen)
        assert sorted(seen.tolist()) == list(range(50))
        orders.append(seen)
    assert not torch.equal(orders[0], orders[1])  # reshuffled each epoch
    assert ld.epoch == 3


def test_loader_no_shuffle_and_determinism():
    ds = _indexed(20)
    ld = Loader(ds, 5, shuffle=False, generator=_gen())
    assert [next(ld)[1].tolist() for _ in range(5)][-1] == [0, 1, 2, 3, 4]
    a = Loader(ds, 5, generator=_gen(7), augment=True, noise_sigma=0.1)
    b = Loader(ds, 5, generator=_gen(7), augment=True, noise_sigma=0.1)
    for _ in range(9):
        (xa, ya), (xb, yb) = next(a), next(b)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    torch.manual_seed(1)
    c = Loader(ds, 5)
    torch.manual_seed(1)
    d = Loader(ds, 5)
    assert torch.equal(next(c)[1], next(d)[1])  # default generator follows torch.manual_seed


@pytest.mark.parametrize("skip", [0, 3, 4, 9])  # fresh, mid-epoch, last batch, next epoch
def test_loader_state_dict_continues_the_sequence(skip):
    ds = load_dataset("digits", "test", n=40)
    kw = {"augment": True, "noise_sigma": 0.03}
    a = Loader(ds, 8, generator=_gen(3), **kw)
    for _ in range(skip):
        next(a)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    want = [next(a) for _ in range(7)]
    b = Loader(ds, 8, generator=_gen(99), **kw)
    b.load_state_dict(sd)
    assert (b.epoch, b.position) == (skip // 5, skip % 5)
    for (xa, ya), (xb, yb) in zip(want, (next(b) for _ in range(7))):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(ValueError, match="batch_size"):
        Loader(ds, 4).load_state_dict(sd)


def test_augment_keeps_shape_range_and_pad0_is_identity():
    ds = load_dataset("digits", "test")
    x, _ = next(Loader(ds, 64, augment=True, generator=_gen()))
    assert x.shape == (64, 1, 8, 8) and x.min() >= -1 and x.max() <= 1
    plain = Dataset(ds.x, ds.y, 10, "digits", pad=0, flip=False)
    xa, ya = next(Loader(plain, 64, augment=True, generator=_gen(5)))
    xb, yb = next(Loader(plain, 64, augment=False, generator=_gen(5)))
    assert torch.equal(ya, yb) and torch.equal(xa, xb)
    idx = _indexed(20, size=4, pad=0)
    xi, yi = next(Loader(idx, 20, augment=True, generator=_gen(5)))
    assert torch.equal(xi, idx.x[yi])


def test_crop_shifts_single_pixel_by_at_most_pad():
    n, s, pad = 256, 16, 4
    x = -torch.ones(n, 1, s, s)
    x[:, :, 8, 8] = 1.0
    ds = Dataset(x, torch.arange(n), n, "dot", pad=pad, flip=False)
    out, _ = next(Loader(ds, n, augment=True, generator=_gen(1)))
    assert out.shape == x.shape
    bright = (out == 1).nonzero()
    assert len(bright) == n  # one bright pixel per image, nothing duplicated or lost
    dy, dx = bright[:, 2] - 8, bright[:, 3] - 8
    assert dy.abs().max() <= pad and dx.abs().max() <= pad
    assert set(dy.tolist()) == set(range(-pad, pad + 1)) == set(dx.tolist())  # every offset used


def test_crop_is_a_window_of_the_reflect_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 3, 8, 8, generator=g) * 2 - 1
    ds = Dataset(x, torch.arange(32), 32, "rand", pad=2, flip=False)
    out, y = next(Loader(ds, 32, augment=True, generator=_gen(2)))
    padded = F.pad(x[y], (2, 2, 2, 2), mode="reflect")
    for b in range(32):
        assert any(torch.equal(out[b], padded[b, :, i:i + 8, j:j + 8])
                   for i in range(5) for j in range(5))


def test_flip_only_when_dataset_allows_it():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 6, 6, generator=g) * 2 - 1
    yes = Dataset(x, torch.arange(64), 64, "r", pad=0, flip=True)
    out, y = next(Loader(yes, 64, augment=True, generator=_gen(4)))
    same = (out == x[y]).flatten(1).all(1)
    flipped = (out == x[y].flip(3)).flatten(1).all(1)
    assert (same | flipped).all() and same.any() and flipped.any()
    no = Dataset(x, torch.arange(64), 64, "r", pad=0, flip=False)
    out, y = next(Loader(no, 64, augment=True, generator=_gen(4)))
    assert torch.equal(out, x[y])


def test_noise_has_the_right_std():
    ds = Dataset(torch.zeros(4096, 3, 8, 8), torch.zeros(4096, dtype=torch.int64), 1, "zeros")
    out, _ = next(Loader(ds, 4096, noise_sigma=0.03, generator=_gen()))
    assert abs(out.std().item() - 0.03) < 0.0005 and abs(out.mean().item()) < 0.0005


def test_epoch_batches_one_ordered_pass():
    ds = _indexed(23)
    ld = Loader(ds, 5, augment=True, noise_sigma=0.5, generator=_gen())
    state = ld.generator.get_state()
    batches = list(ld.epoch_batches())
    assert [len(y) for _, y in batches] == [5, 5, 5, 5, 3]
    assert torch.equal(torch.cat([y for _, y in batches]), torch.arange(23))
    assert torch.equal(torch.cat([x for x, _ in batches]), ds.x)  # no augmentation or noise
    assert torch.equal(ld.generator.get_state(), state) and ld.position == 0
    assert len(list(ld.epoch_batches(10))) == 3


def test_loader_bad_arguments():
    ds = _indexed(10)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            Loader(ds, bad)
    with pytest.raises(ValueError, match="batch_size"):
        Loader(ds, 11)
    assert Loader(ds, 11, drop_last=False).steps_per_epoch == 1
    with pytest.raises(ValueError, match="noise_sigma"):
        Loader(ds, 2, noise_sigma=-0.1)
    with pytest.raises(TypeError, match="generator"):
        Loader(ds, 2, generator=np.random.default_rng())
    with pytest.raises(TypeError, match="ds"):
        Loader(ds.x, 2)
    with pytest.raises(ValueError, match="pad"):
        Loader(_indexed(10, size=4, pad=4), 2, augment=True)
    with pytest.raises(ValueError, match="x has 10 samples but y has 9"):
        Dataset(ds.x, ds.y[:9], 10, "bad")
