"""Data files that are crafted, damaged or of the wrong kind: each reader refuses them with a
one-line ValueError naming the file (and the field), before allocating more memory than the
file can back; `ebjdat train` turns that into a one-line message and exit code 2. Image
files of every Pillow mode decode to the right 8-bit RGB values."""
import io
import os
import pickle
import struct
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ebjdat.data import imagefiles, load_dataset
from ebjdat.data.base import read_class_file

REPO = Path(__file__).resolve().parents[1]
TB = 2 ** 40


# ---- CIFAR batches -------------------------------------------------------------------------
def _cifar10(root: Path) -> Path:
    """A valid cifar-10-batches-py folder of two images per batch; returns the folder."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [1, 2]}
        (folder / name).write_bytes(pickle.dumps(d, protocol=2))
    return folder


def _refused(root: Path, split: str = "test") -> str:
    with pytest.raises(ValueError) as ei:
        load_dataset("cifar10", split, root=root)
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


def _binbytes8(n: int) -> bytes:
    """A protocol-4 pickle {b'data': <BINBYTES8 claiming n bytes, holding 2>}."""
    return b"\x80\x04}(C\x04data\x8e" + n.to_bytes(8, "little") + b"xx"


def test_cifar_length_field_beyond_the_file_is_refused(tmp_path):
    folder = _cifar10(tmp_path)
    (folder / "test_batch").write_bytes(_binbytes8(TB))
    msg = _refused(tmp_path)
    assert msg.startswith(str(folder / "test_batch")) and str(TB) in msg and "only 2 remain" in msg


def test_cifar_frame_beyond_the_file_is_refused(tmp_path):
    folder = _cifar10(tmp_path)
    (folder / "test_batch").write_bytes(b"\x80\x04\x95" + TB.to_bytes(8, "little") + b"}.")
    msg = _refused(tmp_path)
    assert str(folder / "test_batch") in msg and "frame" in msg.lower()


def test_cifar_array_shape_the_file_does_not_back_is_refused(tmp_path):
    """_reconstruct(ndarray, (2**50,), 'b') would allocate a petabyte before any data is read."""
    folder = _cifar10(tmp_path)
    crafted = (b"\x80\x02}(C\x04datacnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
               b"\x8a\x07" + (2 ** 50).to_bytes(7, "little") + b"\x85C\x01b\x87RC\x06labels]u.")
    (folder / "test_batch").write_bytes(crafted)
    msg = _refused(tmp_path)
    assert str(folder / "test_batch") in msg and "_reconstruct" in msg


def test_cifar_array_built_directly_is_refused(tmp_path):
    """numpy.ndarray((2**50,)) called by REDUCE: a batch only names ndarray for _reconstruct."""
    folder = _cifar10(tmp_path)
    crafted = b"\x80\x02}(C\x04datacnumpy\nndarray\n\x8a\x07" + (2 ** 50).to_bytes(7, "little") + b"\x85\x85Ru."
    (folder / "test_batch").write_bytes(crafted)
    msg = _refused(tmp_path)
    assert str(folder / "test_batch") in msg and "numpy.ndarray" in msg


def test_cifar_object_array_is_refused(tmp_path):
    folder = _cifar10(tmp_path)
    d = {b"data": np.array([[1] * 3072, [2] * 3072], dtype=object), b"labels": [1, 2]}
    (folder / "test_batch").write_bytes(pickle.dumps(d, protocol=2))
    msg = _refused(tmp_path)
    assert str(folder / "test_batch") in msg and "object" in msg


def test_cifar_rows_repeated_through_the_memo_are_refused(tmp_path):
    """One row pickled once and referenced 2000 times: 6 MB of values from a 10 kB file."""
    folder = _cifar10(tmp_path)
    row = [7] * 3072
    path = folder / "test_batch"
    path.write_bytes(pickle.dumps({b"data": [row] * 2000, b"labels": [1] * 2000}, protocol=2))
    assert path.stat().st_size < 20_000
    msg = _refused(tmp_path)
    assert msg.startswith(str(path)) and "field 'data'" in msg and "6144000 values" in msg


def test_cifar_rows_as_lists_still_load(tmp_path):
    folder = _cifar10(tmp_path)
    rows = [[(i * 7 + j) % 256 for j in range(3072)] for i in range(2)]
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": rows, b"labels": [3, 4]}, protocol=2))
    ds = load_dataset("cifar10", "test", root=tmp_path)
    assert ds.y.tolist() == [3, 4]
    assert np.array_equal(np.round((ds.x.numpy() + 1) / 2 * 255).reshape(2, -1), np.asarray(rows))


def test_cifar_float_data_is_refused(tmp_path):
    folder = _cifar10(tmp_path)
    path = folder / "data_batch_1"
    d = {b"data": np.random.default_rng(0).random((2, 3072), dtype=np.float32), b"labels": [1, 2]}
    path.write_bytes(pickle.dumps(d, protocol=2))
    msg = _refused(tmp_path, "train")
    assert msg.startswith(f"{path}: field 'data' holds float32 values; expected uint8 images in [0, 255]")


def test_cifar_integer_data_out_of_range_is_refused(tmp_path):
    folder = _cifar10(tmp_path)
    data = np.zeros((2, 3072), dtype=np.int64)
    data[1, 5] = 300
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": [1, 2]}, protocol=2))
    msg = _refused(tmp_path)
    assert msg.startswith(f"{folder / 'test_batch'}: field 'data' holds int64 values in [0, 300]")


def test_cifar_integer_data_in_range_loads(tmp_path):
    folder = _cifar10(tmp_path)
    data = np.arange(2 * 3072, dtype=np.int32).reshape(2, 3072) % 256
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": [1, 2]}, protocol=2))
    ds = load_dataset("cifar10", "test", root=tmp_path)
    assert np.array_equal(np.round((ds.x.numpy() + 1) / 2 * 255).reshape(2, -1), data)


@pytest.mark.parametrize("labels, needle", [
    (["cat", "dog"], "holds str values"),
    ([b"1", b"2"], "holds bytes values"),
    ([1.5, 2.0], "holds float values"),
    ([1, 2, 3], "holds 3 labels for 2 images"),
    ([1, 10], "holds label 10, outside [0, 10)"),
    (np.array([0.0, 1.0]), "holds float64 values"),
])
def test_cifar_bad_labels_name_the_file_and_the_field(tmp_path, labels, needle):
    folder = _cifar10(tmp_path)
    data = np.zeros((2, 3072), dtype=np.uint8)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=2))
    msg = _refused(tmp_path)
    assert msg.startswith(f"{folder / 'test_batch'}: field 'labels' ") and needle in msg


def test_cli_refuses_a_crafted_batch_in_one_line(tmp_path):
    folder = _cifar10(tmp_path / "data")
    (folder / "data_batch_1").write_bytes(_binbytes8(TB))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "ebjdat.cli", "train", "--dataset", "cifar10", "--data-root",
                        str(tmp_path / "data"), "--steps", "1", "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "is not a readable CIFAR batch" in r.stderr
    assert str(folder / "data_batch_1") in r.stderr


# ---- image files -----------------------------------------------------------------------------
def _decode(path, size):
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # e.g. Pillow's warning on palette transparency
        return imagefiles.decode_image(path, size)


def test_16_bit_grey_png_is_scaled_not_saturated(tmp_path):
    v = (np.arange(64, dtype=np.uint32) * 1031 % 65536).astype(np.uint16).reshape(8, 8)
    v[0, :4] = [0, 128, 129, 65535]
    path = tmp_path / "g16.png"
    Image.fromarray(v).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    want = np.round(v.astype(np.float64) * 255 / 65535).astype(np.uint8)
    got = _decode(path, 8)
    assert got.shape == (3, 8, 8) and all(np.array_equal(got[c], want) for c in range(3))


def test_32_bit_integer_image_outside_16_bits_is_refused(tmp_path):
    im = Image.fromarray(np.full((4, 4), 70000, dtype=np.int32))
    assert im.mode == "I"
    with pytest.raises(ValueError, match=r"x\.png.* 32-bit integer values in \[70000, 70000\]"):
        imagefiles.to_rgb8(im, Path("x.png"))
    ok = imagefiles.to_rgb8(Image.fromarray(np.full((4, 4), 65535, dtype=np.int32)), Path("x.png"))
    assert ok.mode == "RGB" and np.asarray(ok).min() == 255


@pytest.mark.parametrize("transparency", [None, 3, bytes(range(256))])
def test_palette_png_decodes_through_the_palette(tmp_path, transparency):
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    p = Image.fromarray(rgb).convert("P")
    path = tmp_path / "p.png"
    p.save(path, **({} if transparency is None else {"transparency": transparency}))
    palette = np.asarray(p.getpalette(), dtype=np.uint8).reshape(-1, 3)
    want = palette[np.asarray(p)].transpose(2, 0, 1)
    assert np.array_equal(_decode(path, 8), want)


def test_cmyk_jpeg_decodes_as_pillow_converts_it(tmp_path):
    path = tmp_path / "c.jpg"
    Image.new("CMYK", (8, 8), (10, 200, 30, 40)).save(path)
    with Image.open(path) as im:
        assert im.mode == "CMYK"
        want = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(_decode(path, 8), want)


# ---- downsampled ImageNet (npz) -------------------------------------------------------------
def _npy(shape, descr="|u1", payload=b"") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


def _imagenet_val(root, data_npy: bytes, labels=(1, 2)):
    with zipfile.ZipFile(root / "val_data.npz", "w") as z:
        z.writestr("data.npy", data_npy)
        buf = io.BytesIO()
        np.save(buf, np.asarray(labels))
        z.writestr("labels.npy", buf.getvalue())
    return root / "val_data.npz"


def test_imagenet_header_shape_beyond_the_member_is_refused(tmp_path):
    path = _imagenet_val(tmp_path, _npy((2 ** 40, 3072), payload=bytes(3072)))
    with pytest.raises(ValueError) as ei:
        load_dataset("imagenet32", "test", root=tmp_path)
    msg = str(ei.value)
    assert msg.startswith(str(path)) and "'data'" in msg and "3072 bytes" in msg and "\n" not in msg


def test_imagenet_still_reads_compressed_batches(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (2, 3072), dtype=np.uint8)
    np.savez_compressed(tmp_path / "val_data.npz", data=data, labels=np.array([3, 1000]))
    ds = load_dataset("imagenet32", "test", root=tmp_path)
    assert ds.y.tolist() == [2, 999]


# ---- SVHN (.mat) ----------------------------------------------------------------------------
def test_svhn_float_labels_must_be_whole_numbers(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    X = np.zeros((32, 32, 3, 2), dtype=np.uint8)
    scipy_io.savemat(tmp_path / "test_32x32.mat", {"X": X, "y": np.array([[10.0], [3.0]])})
    assert load_dataset("svhn", "test", root=tmp_path).y.tolist() == [0, 3]   # the release's doubles
    scipy_io.savemat(tmp_path / "test_32x32.mat", {"X": X, "y": np.array([[1.5], [3.0]])})
    with pytest.raises(ValueError, match=r"test_32x32\.mat: field 'y' holds float64 values that are not "
                                         r"whole numbers"):
        load_dataset("svhn", "test", root=tmp_path)


def test_svhn_length_field_beyond_the_file_is_refused(tmp_path):
    pytest.importorskip("scipy.io")
    path = tmp_path / "test_32x32.mat"
    header = b"MATLAB 5.0 MAT-file".ljust(124, b" ") + struct.pack("<HH", 0x0100, 0x4D49)
    path.write_bytes(header + struct.pack("<II", 14, 0xFFFFFFF0) + bytes(64))   # miMATRIX claiming 4 GB
    with pytest.raises(ValueError) as ei:
        load_dataset("svhn", "test", root=tmp_path)
    msg = str(ei.value)
    assert msg.startswith(str(path)) and str(0xFFFFFFF0) in msg and "64 remain" in msg


# ---- text files -------------------------------------------------------------------------------
def test_binary_class_file_names_the_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match=r"classes file .*classes\.txt is not UTF-8 text"):
        read_class_file(path, "svhn")
