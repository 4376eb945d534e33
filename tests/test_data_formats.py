"""The file datasets, each from tiny files written here in its real format: Tiny-ImageNet
(JPEG folders), any class-folder tree (PNG / JPEG), downsampled ImageNet (npz batches),
SVHN (.mat) and STL-10 (raw binaries); class subsets; the decoded-image cache (written,
reused, rebuilt when stale, never a foreign one); errors that say what to do; the loader's
shared device copy and its benchmark rows; and, per format, `ebjdat train` for two steps
then `ebjdat eval` (and `ebjdat sample`) of its checkpoint with the data moved."""
import json
import os
import shutil
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ebjdat import cli
from ebjdat.data import CLASS_SUBSETS, DATASETS, imagefiles, load_dataset
from ebjdat.data import cache as cache_mod
from ebjdat.data.loader import Loader, device_copy

from .conftest import gpu

RNG = np.random.default_rng(0)


def _unit(x8: np.ndarray) -> torch.Tensor:
    """uint8 -> the [-1, 1] float32 a Dataset holds."""
    return (torch.from_numpy(np.ascontiguousarray(x8)).float() / 255 - 0.5) / 0.5


def _save(path, arr, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)


# ---- writers of the real formats ---------------------------------------------------------
def write_tiny(root, wnids=("n02", "n01", "n03"), per_class=3, n_val=6):
    """A Tiny-ImageNet release under root/tiny-imagenet-200 (wnids deliberately unsorted; one
    grey JPEG among the training images, as the real set has)."""
    top = root / "tiny-imagenet-200"
    top.mkdir(parents=True)
    (top / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for k, w in enumerate(wnids):
        for i in range(per_class):
            shape = (64, 64) if (k, i) == (1, 0) else (64, 64, 3)
            _save(top / "train" / w / "images" / f"{w}_{i}.JPEG", RNG.integers(0, 256, shape, dtype=np.uint8))
        (top / "train" / w / f"{w}_boxes.txt").write_text("")
    lines = []
    for i in range(n_val):
        _save(top / "val" / "images" / f"val_{i}.JPEG", RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        lines.append(f"val_{i}.JPEG\t{wnids[(i * 2) % len(wnids)]}\t0\t0\t63\t63")
    (top / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return top


def write_imagefolder(root, test_name="val"):
    """root/train/{ant,bee,cat}/ and root/<test_name>/{bee,cat}/: PNGs and JPEGs of several
    sizes, plus a non-image file that is ignored."""
    sizes = {"ant": [(20, 40), (48, 48), (30, 30)], "bee": [(16, 16), (64, 32)], "cat": [(33, 21), (40, 40)]}
    for cls, shapes in sizes.items():
        for i, (h, w) in enumerate(shapes):
            suffix = ".png" if i % 2 == 0 else ".JPG"
            _save(root / "train" / cls / f"{cls}{i}{suffix}", RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    for cls in ("bee", "cat"):
        for i in range(2):
            _save(root / test_name / cls / f"t{i}.png", RNG.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    return root


def write_imagenet(root, side, n=4, folder=None, labels=None):
    """The 10 training npz batches and val_data.npz of Imagenet<side> (labels 1-based; the
    training batches also hold a 'mean' array, as the release's do)."""
    where = root / folder if folder else root
    where.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in [f"train_data_batch_{i}" for i in range(1, 11)] + ["val_data"]:
        data = RNG.integers(0, 256, (n, 3 * side * side), dtype=np.uint8)
        lab = np.asarray(labels if labels is not None else RNG.integers(1, 6, n), dtype=np.int64)
        extra = {"mean": data.mean(0)} if name.startswith("train") else {}
        np.savez(where / f"{name}.npz", data=data, labels=lab, **extra)
        out[name] = (data, lab)
    return out


def write_svhn(root, n_train=8, n_test=6):
    import scipy.io
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        X = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)   # 1..10, 10 is the digit 0
        root.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": X, "y": y})
        out[split] = (X, y)
    return out


def write_stl10(root, n_train=6, n_test=4):
    """stl10_binary/{train,test}_{X,y}.bin; X column-major per channel: an image img (c, h, w)
    is stored as img.transpose(0, 2, 1)."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        imgs = RNG.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        y = (np.arange(n) % 3 + 1).astype(np.uint8)
        imgs.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")
        y.tofile(folder / f"{split}_y.bin")
        out[split] = (imgs, y)
    return folder


def test_registry_names_every_dataset():
    assert DATASETS == ("digits", "cifar10", "cifar100", "svhn", "stl10", "tinyimagenet", "imagenet32",
                        "imagenet64", "imagefolder", "synthetic")
    assert set(CLASS_SUBSETS) == {"svhn", "stl10", "tinyimagenet", "imagenet32", "imagenet64", "imagefolder"}
    with pytest.raises(ValueError, match="known: digits, .*, imagefolder, synthetic"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="class subset is supported for svhn"):
        load_dataset("digits", classes=3)


# ---- Tiny-ImageNet -----------------------------------------------------------------------
def test_tinyimagenet_train_and_val(tmp_path):
    top = write_tiny(tmp_path)
    for root in (tmp_path, top):
        tr = load_dataset("tinyimagenet", "train", root=root)
        assert tr.x.shape == (9, 3, 64, 64) and tr.x.dtype == torch.float32 and tr.n_classes == 3
        assert (tr.name, tr.pad, tr.flip) == ("tinyimagenet", 8, True)
        assert tr.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]          # wnids.txt order: n02, n01, n03
        assert tr.x.min() >= -1 and tr.x.max() <= 1
    with Image.open(top / "train" / "n02" / "images" / "n02_1.JPEG") as im:
        want = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
    assert torch.equal(tr.x[1], _unit(want))
    with Image.open(top / "train" / "n01" / "images" / "n01_0.JPEG") as im:   # grey: all channels equal
        assert im.mode == "L"
    assert torch.equal(tr.x[3, 0], tr.x[3, 1]) and torch.equal(tr.x[3, 1], tr.x[3, 2])
    te = load_dataset("tinyimagenet", "test", root=tmp_path)
    assert te.x.shape == (6, 3, 64, 64) and te.y.tolist() == [0, 2, 1, 0, 2, 1]
    small = load_dataset("tinyimagenet", "test", root=tmp_path, image_size=32)
    assert small.x.shape == (6, 3, 32, 32) and small.pad == 4
    assert len(load_dataset("tinyimagenet", root=tmp_path, n=4)) == 4


def test_tinyimagenet_errors_name_the_layout_and_the_url(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"wnids.txt.*tiny-imagenet-200\.zip"):
        load_dataset("tinyimagenet", root=tmp_path)
    top = write_tiny(tmp_path)
    shutil.rmtree(top / "train" / "n03")
    with pytest.raises(FileNotFoundError, match=r"train/n03/images of class n03 .*line 3.*cs231n"):
        load_dataset("tinyimagenet", root=tmp_path)
    ann = top / "val" / "val_annotations.txt"
    ann.write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=r"val_annotations.txt, line 1: expected 'file<TAB>wnid"):
        load_dataset("tinyimagenet", "test", root=tmp_path)
    ann.write_text("val_77.JPEG\tn01\t0\t0\t1\t1\n")
    with pytest.raises(FileNotFoundError, match="val_77.JPEG, named on line 1"):
        load_dataset("tinyimagenet", "test", root=tmp_path)
    (top / "val" / "images" / "val_0.JPEG").write_bytes(b"not a jpeg")
    ann.write_text("val_0.JPEG\tn01\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=r"val_0.JPEG is not a readable image"):
        load_dataset("tinyimagenet", "test", root=tmp_path)


# ---- any class-folder tree ---------------------------------------------------------------
def test_imagefolder_classes_resize_and_crop(tmp_path):
    write_imagefolder(tmp_path)
    tr = load_dataset("imagefolder", "train", root=tmp_path, image_size=16)
    assert tr.x.shape == (7, 3, 16, 16) and tr.n_classes == 3 and (tr.pad, tr.flip) == (2, True)
    assert tr.y.tolist() == [0, 0, 0, 1, 1, 2, 2]                   # ant, bee, cat: sorted folder names
    # bee0.png is 16x16: taken as it is
    with Image.open(tmp_path / "train" / "bee" / "bee0.png") as im:
        assert torch.equal(tr.x[3], _unit(np.asarray(im).transpose(2, 0, 1)))
    # ant0.png is 20 high, 40 wide: short side 20 -> 16 (width 32), then the centre 16 columns
    with Image.open(tmp_path / "train" / "ant" / "ant0.png") as im:
        want = np.asarray(im.resize((32, 16), Image.Resampling.BILINEAR)).transpose(2, 0, 1)[:, :, 8:24]
    assert torch.equal(tr.x[0], _unit(want))
    te = load_dataset("imagefolder", "test", root=tmp_path, image_size=16)
    assert te.y.tolist() == [1, 1, 2, 2] and te.n_classes == 3        # train's numbering
    assert load_dataset("imagefolder", root=tmp_path).x.shape == (7, 3, 64, 64)   # default size


def test_imagefolder_test_folder_and_errors(tmp_path):
    write_imagefolder(tmp_path, test_name="test")
    assert len(load_dataset("imagefolder", "test", root=tmp_path, image_size=8)) == 4
    with pytest.raises(ValueError, match=r"imagefolder needs root .*train/<class>"):
        load_dataset("imagefolder")
    with pytest.raises(FileNotFoundError, match=r"no train folder.*imagenette"):
        load_dataset("imagefolder", root=tmp_path / "test")
    (tmp_path / "test" / "dog").mkdir()
    _save(tmp_path / "test" / "dog" / "d.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"test/dog has no counterpart in .*train"):
        load_dataset("imagefolder", "test", root=tmp_path, image_size=8)
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"train/empty holds no .png/.jpg/.jpeg images"):
        load_dataset("imagefolder", root=tmp_path, image_size=8)
    with pytest.raises(ValueError, match="image_size must be an int >= 1"):
        load_dataset("imagefolder", root=tmp_path, image_size=0)


# ---- the decoded-image cache -------------------------------------------------------------
def _decode_counter(monkeypatch):
    calls = []
    real = imagefiles.decode_image

    def counting(path, size):
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(imagefiles, "decode_image", counting)
    return calls


def test_cache_is_written_then_read(tmp_path, monkeypatch):
    top = write_tiny(tmp_path)
    calls = _decode_counter(monkeypatch)
    a = load_dataset("tinyimagenet", root=tmp_path)
    assert len(calls) == 9
    folder = top / ".ebjdat_cache"
    assert sorted(p.name for p in folder.iterdir()) == ["tinyimagenet-train-64.json", "tinyimagenet-train-64.npz"]
    meta = json.loads((folder / "tinyimagenet-train-64.json").read_text())
    assert meta["files"] == 9 and meta["size"] == 64 and meta["arrays"]["x"] == [[9, 3, 64, 64], "uint8"]
    b = load_dataset("tinyimagenet", root=tmp_path)
    assert len(calls) == 9                                             # nothing decoded again
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    load_dataset("tinyimagenet", root=tmp_path, image_size=32)        # another size: its own file
    assert (folder / "tinyimagenet-train-32.npz").is_file() and len(calls) == 18


def test_stale_cache_is_rebuilt(tmp_path, monkeypatch):
    top = write_tiny(tmp_path)
    a = load_dataset("tinyimagenet", root=tmp_path)
    calls = _decode_counter(monkeypatch)
    img = top / "train" / "n03" / "images" / "n03_2.JPEG"
    new = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    _save(img, new, quality=100)
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))        # a new file, a new time
    b = load_dataset("tinyimagenet", root=tmp_path)
    assert len(calls) == 9 and not torch.equal(a.x[8], b.x[8]) and torch.equal(a.x[:8], b.x[:8])
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))    # touched only: rebuilt too
    load_dataset("tinyimagenet", root=tmp_path)
    assert len(calls) == 18
    (top / "train" / "n03" / "images" / "n03_9.JPEG").write_bytes(img.read_bytes())   # a file added
    c = load_dataset("tinyimagenet", root=tmp_path)
    assert len(c) == 10 and len(calls) == 28
    te = load_dataset("tinyimagenet", "test", root=tmp_path)
    ann = top / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text().replace("val_0.JPEG\tn02", "val_0.JPEG\tn01"))   # relabelled, no image changed
    te2 = load_dataset("tinyimagenet", "test", root=tmp_path)
    assert te.y[0] == 0 and te2.y[0] == 1 and torch.equal(te.x, te2.x) and len(calls) == 28 + 12


def test_damaged_foreign_or_malformed_cache_is_never_used(tmp_path, monkeypatch):
    one, two = write_tiny(tmp_path / "a"), write_tiny(tmp_path / "b", per_class=2)
    load_dataset("tinyimagenet", root=one)
    load_dataset("tinyimagenet", root=two)
    calls = _decode_counter(monkeypatch)
    cached_file = one / ".ebjdat_cache" / "tinyimagenet-train-64.npz"
    shutil.copy(two / ".ebjdat_cache" / "tinyimagenet-train-64.npz", cached_file)   # another set's cache
    assert len(load_dataset("tinyimagenet", root=one)) == 9 and len(calls) == 9
    cached_file.write_bytes(cached_file.read_bytes()[:300])                        # truncated
    assert len(load_dataset("tinyimagenet", root=one)) == 9 and len(calls) == 18
    with np.load(cached_file) as z:   # right provenance, wrong contents
        arrays = {k: z[k] for k in z.files}
    np.savez(cached_file, **{**arrays, "x": arrays["x"][:3]})
    assert len(load_dataset("tinyimagenet", root=one)) == 9 and len(calls) == 27
    with open(cached_file, "wb") as f:                                          # a single array
        np.save(f, np.zeros(3))
    assert len(load_dataset("tinyimagenet", root=one)) == 9 and len(calls) == 36
    monkeypatch.setattr(cache_mod, "CACHE_VERSION", cache_mod.CACHE_VERSION + 1)  # a new format
    load_dataset("tinyimagenet", root=one)
    assert len(calls) == 45
    assert not [p for p in (one / ".ebjdat_cache").iterdir() if p.suffix == ".tmp"]


def test_cache_writes_are_atomic_and_optional(tmp_path, monkeypatch):
    top = write_tiny(tmp_path)
    real_savez = np.savez

    def dies(f, **arrays):
        real_savez(f, **arrays)
        raise KeyboardInterrupt   # killed after writing, before the rename

    monkeypatch.setattr(cache_mod.np, "savez", dies)
    with pytest.raises(KeyboardInterrupt):
        load_dataset("tinyimagenet", root=tmp_path)
    assert list((top / ".ebjdat_cache").iterdir()) == []            # no partial file, no temp
    monkeypatch.setattr(cache_mod.np, "savez", real_savez)

    def refuses(path, write):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cache_mod, "_write_atomic", refuses)
    with pytest.warns(UserWarning, match=r"could not write the decoded-image cache .*EBJDAT_CACHE"):
        ds = load_dataset("tinyimagenet", root=tmp_path)
    assert len(ds) == 9


def test_cache_folder_from_the_environment(tmp_path, monkeypatch):
    top = write_tiny(tmp_path / "data")
    monkeypatch.setenv("EBJDAT_CACHE", str(tmp_path / "caches"))
    load_dataset("tinyimagenet", "test", root=tmp_path / "data")
    (where,) = (tmp_path / "caches").iterdir()
    assert where.name.startswith("tiny-imagenet-200-") and (where / "tinyimagenet-test-64.npz").is_file()
    assert not (top / ".ebjdat_cache").exists()


# ---- downsampled ImageNet ----------------------------------------------------------------
@pytest.mark.parametrize("side", [32, 64])
def test_imagenet_batches_layout_and_labels(tmp_path, side):
    files = write_imagenet(tmp_path, side)
    name = f"imagenet{side}"
    tr = load_dataset(name, "train", root=tmp_path)
    assert tr.x.shape == (40, 3, side, side) and tr.n_classes == 1000 and (tr.pad, tr.flip) == (side // 8, True)
    data, lab = files["train_data_batch_1"]
    assert tr.y[:4].tolist() == (lab - 1).tolist()
    row = data[0]   # CHW flattened: red plane row-major, then green, then blue
    for (c, i, j), k in (((0, 0, 1), 1), ((0, 1, 0), side), ((1, 0, 0), side * side), ((2, side - 1, side - 1),
                                                                                        3 * side * side - 1)):
        assert tr.x[0, c, i, j].item() == pytest.approx((row[k] / 255 - 0.5) / 0.5, abs=1e-6)
    last, _ = files["train_data_batch_10"]
    assert torch.equal(tr.x[36:], _unit(last.reshape(-1, 3, side, side)))
    te = load_dataset(name, "test", root=tmp_path)
    assert len(te) == 4 and te.y.tolist() == (files["val_data"][1] - 1).tolist()


def test_imagenet_class_subsets(tmp_path):
    write_imagenet(tmp_path, 32, n=5, labels=[1, 2, 3, 4, 5])   # classes 0..4 in every batch
    three = load_dataset("imagenet32", root=tmp_path, classes=3)
    assert three.n_classes == 3 and len(three) == 30 and three.y.tolist() == [0, 1, 2] * 10
    listed = tmp_path / "classes.txt"
    listed.write_text("# kept classes\n4, 2\n")
    two = load_dataset("imagenet32", "test", root=tmp_path, classes=str(listed))
    assert two.n_classes == 2 and two.y.tolist() == [1, 0]           # class 2 -> 1, class 4 -> 0
    full = load_dataset("imagenet32", "test", root=tmp_path)
    assert torch.equal(two.x, full.x[[2, 4]])
    assert load_dataset("imagenet32", "test", root=tmp_path, classes=[4, 2]).y.tolist() == [1, 0]


@pytest.mark.parametrize("classes, exc, match", [
    (0, ValueError, r"classes=0: imagenet32 has 1000 classes; a count must be in \[1, 1000\]"),
    (1001, ValueError, "classes=1001"),
    ([3, 3], ValueError, "class 3 is listed twice"),
    ([1000], ValueError, r"class 1000 is outside \[0, 1000\) \(indices are 0-based\)"),
    ([], ValueError, "lists no class"),
    (2.5, TypeError, "classes must be None, a count"),
    ("nowhere.txt", FileNotFoundError, "classes file nowhere.txt does not exist"),
])
def test_bad_class_subsets(tmp_path, classes, exc, match):
    write_imagenet(tmp_path, 32, n=2)
    with pytest.raises(exc, match=match):
        load_dataset("imagenet32", root=tmp_path, classes=classes)


def test_class_file_with_a_bad_token(tmp_path):
    (tmp_path / "c.txt").write_text("1\n2 x3\n")
    with pytest.raises(ValueError, match=r"c.txt, line 2: 'x3' is not an integer"):
        load_dataset("svhn", root=tmp_path, classes=str(tmp_path / "c.txt"))


def test_imagenet_archive_folders_and_errors(tmp_path):
    write_imagenet(tmp_path, 32, folder="Imagenet32_train_npz")
    (tmp_path / "Imagenet32_train_npz" / "val_data.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"val_data.npz not found.*image-net.org/download-images"):
        load_dataset("imagenet32", "test", root=tmp_path)
    assert len(load_dataset("imagenet32", root=tmp_path)) == 40
    batch = tmp_path / "Imagenet32_train_npz" / "train_data_batch_3.npz"
    np.savez(batch, data=np.zeros((2, 3 * 64 * 64), np.uint8), labels=np.array([1, 2]))
    with pytest.raises(ValueError, match=r"train_data_batch_3.npz: 'data' is \(2, 12288\) uint8, expected \(N, 3072\)"):
        load_dataset("imagenet32", root=tmp_path)
    np.savez(batch, data=np.zeros((2, 3072), np.uint8), labels=np.array([0, 2]))
    with pytest.raises(ValueError, match=r"labels must be 1..1000, got values in \[0, 2\]"):
        load_dataset("imagenet32", root=tmp_path)
    np.savez(batch, data=np.zeros((2, 3072), np.uint8), labels=np.array([{"a": 1}, 2], dtype=object))
    with pytest.raises(ValueError, match="train_data_batch_3.npz is not a readable npz batch"):
        load_dataset("imagenet32", root=tmp_path)
    with open(batch, "wb") as f:
        np.save(f, np.zeros((2, 3072), np.uint8))
    with pytest.raises(ValueError, match="train_data_batch_3.npz holds a single array, not an npz archive"):
        load_dataset("imagenet32", root=tmp_path)
    batch.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(ValueError, match="train_data_batch_3.npz is not a readable npz batch"):
        load_dataset("imagenet32", root=tmp_path)
    write_imagenet(tmp_path / "i64", 64, n=2)
    with pytest.raises(ValueError, match=r"image_size must be an int >= 64 \(the native size\)"):
        load_dataset("imagenet64", "test", root=tmp_path / "i64", image_size=32)


# ---- SVHN --------------------------------------------------------------------------------
def test_svhn_mat_files(tmp_path):
    files = write_svhn(tmp_path / "svhn")
    for root in (tmp_path, tmp_path / "svhn"):
        tr = load_dataset("svhn", root=root)
        assert tr.x.shape == (8, 3, 32, 32) and tr.n_classes == 10 and (tr.pad, tr.flip) == (4, False)
    X, y = files["train"]
    assert torch.equal(tr.x[5], _unit(X[..., 5].transpose(2, 0, 1)))
    assert tr.y.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    te = load_dataset("svhn", "test", root=tmp_path)
    assert te.y.tolist() == [1, 2, 3, 4, 5, 6]
    files = write_svhn(tmp_path / "ten", n_train=10)
    assert load_dataset("svhn", root=tmp_path / "ten").y[9].item() == 0    # label 10 is the digit 0
    sub = load_dataset("svhn", root=tmp_path / "ten", classes=[0, 9])
    assert sub.y.tolist() == [1, 0] and sub.n_classes == 2
    assert load_dataset("svhn", root=tmp_path, image_size=64).x.shape == (8, 3, 64, 64)


def test_svhn_errors(tmp_path, monkeypatch):
    import scipy.io
    with pytest.raises(FileNotFoundError, match=r"train_32x32.mat not found.*ufldl.stanford.edu/housenumbers"):
        load_dataset("svhn", root=tmp_path)
    (tmp_path / "train_32x32.mat").write_bytes(b"MATLAB? no")
    with pytest.raises(ValueError, match=r"train_32x32.mat is not a readable MATLAB file.*housenumbers"):
        load_dataset("svhn", root=tmp_path)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(ValueError, match=r"expected X of shape \(32, 32, 3, N\) uint8, got \(28, 28, 3, 2\)"):
        load_dataset("svhn", root=tmp_path)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8),
                                                    "y": np.array([[0], [3]])})
    with pytest.raises(ValueError, match=r"labels must be 1..10"):
        load_dataset("svhn", root=tmp_path)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(ImportError, match="pip install scipy"):
        load_dataset("svhn", root=tmp_path)


# ---- STL-10 ------------------------------------------------------------------------------
def test_stl10_binaries(tmp_path):
    folder = write_stl10(tmp_path)
    imgs = np.fromfile(folder / "train_X.bin", np.uint8).reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)
    for root in (tmp_path, folder):
        tr = load_dataset("stl10", root=root)
        assert tr.x.shape == (6, 3, 96, 96) and tr.n_classes == 10 and (tr.pad, tr.flip) == (12, True)
        assert torch.equal(tr.x, _unit(imgs)) and tr.y.tolist() == [0, 1, 2, 0, 1, 2]
    # the transpose matters: pixel (row 0, column 1) is byte 96 of the channel, not byte 1
    raw = np.fromfile(folder / "train_X.bin", np.uint8)
    assert tr.x[0, 0, 0, 1].item() == pytest.approx((raw[96] / 255 - 0.5) / 0.5, abs=1e-6)
    te = load_dataset("stl10", "test", root=tmp_path, classes=2)
    assert te.n_classes == 2 and te.y.tolist() == [0, 1, 0]


def test_stl10_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train_X.bin and train_y.bin not found.*acoates/stl10"):
        load_dataset("stl10", root=tmp_path)
    folder = write_stl10(tmp_path)
    (folder / "train_X.bin").write_bytes((folder / "train_X.bin").read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"train_X.bin holds \d+ bytes, not a positive multiple of 3\*96\*96"):
        load_dataset("stl10", root=tmp_path)
    (folder / "test_y.bin").write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match=r"test_y.bin holds 2 labels but .*test_X.bin holds 4 images"):
        load_dataset("stl10", "test", root=tmp_path)
    (folder / "test_y.bin").write_bytes(b"\x01\x02\x0b\x01")
    with pytest.raises(ValueError, match=r"labels must be 1..10"):
        load_dataset("stl10", "test", root=tmp_path)


# ---- the loader's device copy and its benchmark rows -------------------------------------
def test_device_copy_is_shared_until_the_data_change():
    x = torch.rand(4, 3, 8, 8)
    a, b = device_copy(x, torch.device("meta")), device_copy(x, torch.device("meta"))
    assert a is b
    other = torch.rand(4, 3, 8, 8)
    assert device_copy(other, torch.device("meta")) is not a
    x.add_(1)                                   # written since: a fresh copy
    assert device_copy(x, torch.device("meta")) is not a


@gpu
def test_two_loaders_of_one_dataset_share_the_gpu_copy():
    ds = load_dataset("synthetic", n=64)
    a = Loader(ds, 8, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    b = Loader(ds, 16, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    assert a.x.data_ptr() == b.x.data_ptr() and torch.equal(a.x.cpu(), ds.x)


def test_bench_rows_put_the_loader_beside_the_model(monkeypatch):
    from ebjdat.bench import suite_step
    seen = []

    def fake_median_us(fn, device, **kw):
        out = fn()
        seen.append(tuple(out[0].shape) if isinstance(out, tuple) else None)
        return 1000.0 if isinstance(out, tuple) else 4000.0   # a loader batch: 1 ms; the model: 4 ms

    monkeypatch.setattr(suite_step.timing, "median_us", fake_median_us)
    rows = suite_step.loader_rows("cpu", quick=True)
    assert [r["case"] for r in rows] == ["loader 32x32x3/b16", "loader 64x64x3/b16"]
    assert seen == [(16, 3, 32, 32), None, (16, 3, 64, 64), None]
    for r in rows:
        assert r["images_per_s"] == pytest.approx(16_000) and r["model_images_per_s"] == pytest.approx(4_000)
        assert r["speedup"] == pytest.approx(4.0) and r["baseline"] == "small_cnn fwd+bwd fp32"
        assert "loader 16,000 images/s, small_cnn forward + backward 4,000 images/s" in r["note"]


# ---- ebjdat train, then ebjdat eval and sample, per format -------------------------------
TINY_RUN = """
model = "small_cnn"
batch_size = 4
label_batch_size = 4
buffer_size = 8
sgld_steps = 1
pgd_steps = 1
eval_pgd_steps = 1
sam_rho = 0.0
warmup_iters = 1
ckpt_every = 2
log_every = 1
device = "cpu"
"""


def _imagefolder_root(tmp):
    write_imagefolder(tmp / "data")
    return tmp / "data", ["--image-size", "16"], 3


def _tiny_root(tmp):
    write_tiny(tmp / "data")
    return tmp / "data", [], 3


def _imagenet_root(side):
    def make(tmp):
        write_imagenet(tmp / "data", side, n=4, labels=[1, 2, 3, 1])
        return tmp / "data", ["--classes", "3"], 3
    return make


def _svhn_root(tmp):   # two classes: a full 3072-dim covariance for each of ten is 0.4 GB and a minute here
    write_svhn(tmp / "data", n_train=20, n_test=20)
    return tmp / "data", ["--classes", "2"], 2


def _stl10_root(tmp):
    write_stl10(tmp / "data", n_train=6, n_test=6)
    return tmp / "data", ["--classes", "3"], 3


E2E = {"tinyimagenet": _tiny_root, "imagefolder": _imagefolder_root, "imagenet32": _imagenet_root(32),
       "imagenet64": _imagenet_root(64), "svhn": _svhn_root, "stl10": _stl10_root}


@pytest.mark.parametrize("name", list(E2E))
def test_train_then_eval_with_the_data_moved(tmp_path, name, capsys):
    root, flags, n_classes = E2E[name](tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY_RUN)
    run = tmp_path / "run"
    assert cli.main(["train", "--config", str(tmp_path / "tiny.toml"), "--dataset", name, "--data-root", str(root),
                     "--steps", "2", "--out", str(run), *flags]) == 0, capsys.readouterr().err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 2 and summary["config"]["dataset"] == name and 0 <= summary["clean_acc"] <= 1
    init = torch.load(run / "init.pt", weights_only=True)
    side = {"imagefolder": 16, "imagenet32": 32, "svhn": 32, "stl10": 96}.get(name, 64)
    assert init["mean"].shape == (n_classes, 3 * side * side)
    assert ("factor" in init) == (3 * side * side > 4096)        # 64x64 and 96x96: low-rank
    moved = tmp_path / "moved"
    shutil.move(str(root), str(moved))
    out = tmp_path / "eval.json"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)   # the moved data's cache must be writable, no warning
        assert cli.main(["eval", "--checkpoint", str(run), "--n", "4", "--steps", "1", "--no-samples",
                         "--protocol", "standard", "--device", "cpu", "--json", str(out), "--out",
                         str(tmp_path / "e"), "--data-root", str(moved)]) == 0, capsys.readouterr().err
    r = json.loads(out.read_text())
    assert r["n"] == 4 and 0 <= r["clean_acc"] <= 1
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(run), "--n", "4", "--steps", "1", "--no-samples",
                     "--protocol", "standard", "--device", "cpu", "--out", str(tmp_path / "e2")]) == 2
    err = capsys.readouterr().err                                   # the data moved away: where it looked
    assert f"{root}" in err and "http" in err, err
    assert cli.main(["sample", "--checkpoint", str(run), "--fresh", "--n", "2", "--steps", "1",
                     "--out", str(tmp_path / "s.png"), "--device", "cpu"]) == 0
    with Image.open(tmp_path / "s.png") as im:
        assert im.width >= side
    if "factor" in init:   # a resume continues with the saved low-rank Gaussian, the data where they are now
        assert cli.main(["train", "--resume", str(run), "--steps", "3", "--data-root", str(moved)]) == 0
        assert json.loads((run / "summary.json").read_text())["step"] == 3
        assert torch.equal(torch.load(run / "init.pt", weights_only=True)["factor"], init["factor"])


def test_train_flags_for_classes_and_image_size(tmp_path, capsys):
    """--classes FILE is read at once and the run's config stores the list; bad values are
    refused before anything is built."""
    from ebjdat.cli import TRAIN_FLAGS, _classes_arg
    assert {"--classes", "--image-size"} <= TRAIN_FLAGS.keys()
    (tmp_path / "c.txt").write_text("7\n3\n")
    assert _classes_arg("12") == 12 and _classes_arg(str(tmp_path / "c.txt")) == [7, 3]
    with pytest.raises(SystemExit):
        cli.main(["train", "--classes", str(tmp_path / "missing.txt")])
    assert "classes file" in capsys.readouterr().err
    from ebjdat.train import TrainConfig
    cfg = TrainConfig.preset("sadajem", dataset="imagenet32", classes=[7, 3])
    assert TrainConfig.from_dict(cfg.to_dict()).classes == [7, 3]
    for bad in (0, "", []):
        with pytest.raises(ValueError, match="classes must"):
            TrainConfig.preset("sadajem", dataset="imagenet32", classes=bad)
    with pytest.raises(ValueError, match="classes must be"):
        TrainConfig.preset("sadajem", dataset="imagenet32", classes=2.5)
