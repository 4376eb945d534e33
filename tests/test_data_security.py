"""CIFAR batches are unpickled with a restricted unpickler: a crafted file under the data
root is refused before any of it runs, while real batches (Python 2 pickles of the
official release, or Python 3 re-pickles) still load."""
import pickle
import struct

import numpy as np
import pytest
import torch

from ebjdat.data import load_dataset


class Payload:
    """Unpickling it runs exec, which writes ``marker``: what a crafted batch file does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('payload ran')",)


def _py2_str(b: bytes) -> bytes:
    """A Python 2 str in a protocol-2 pickle (SHORT_BINSTRING / BINSTRING)."""
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def _py2_int(n: int) -> bytes:
    return b"K" + bytes([n]) if 0 <= n < 256 else b"J" + struct.pack("<i", n)


def py2_batch(data: np.ndarray, labels, label_key=b"labels") -> bytes:
    """The bytes Python 2's cPickle (protocol 2, numpy 1) writes for a CIFAR batch: the
    format of the official release, with numpy.core.multiarray._reconstruct and the
    array's bytes as a Python 2 str."""
    n, m = data.shape
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _py2_int(0) + b"\x85" + _py2_str(b"b")
             + b"\x87R(" + _py2_int(1) + _py2_int(n) + b"M" + struct.pack("<H", m) + b"\x86"
             + b"cnumpy\ndtype\n" + _py2_str(b"u1") + _py2_int(0) + _py2_int(1) + b"\x87R"
             + b"(" + _py2_int(3) + _py2_str(b"|") + b"NNN" + _py2_int(-1) + _py2_int(-1) + _py2_int(0) + b"tb"
             + b"\x89" + _py2_str(data.tobytes()) + b"tb")
    labels = b"](" + b"".join(_py2_int(v) for v in labels) + b"e"
    return (b"\x80\x02}(" + _py2_str(b"data") + array + _py2_str(label_key) + labels
            + _py2_str(b"batch_label") + _py2_str(b"training batch 1 of 5") + b"u.")


def _batch(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, n)]


def _cifar10(root, write):
    """A cifar-10-batches-py folder; write(path, data, labels) writes each batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batches[name] = _batch(2, i)
        write(folder / name, *batches[name])
    return folder, batches


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_crafted_batch_is_refused_and_does_not_run(tmp_path, protocol):
    marker = tmp_path / "payload_ran"
    folder, _ = _cifar10(tmp_path, lambda p, x, y: p.write_bytes(pickle.dumps({b"data": x, b"labels": y}, 2)))
    # a batch file swapped for one whose unpickling runs code (hidden among the labels)
    evil = folder / "data_batch_3"
    x, y = _batch(2, 3)
    evil.write_bytes(pickle.dumps({b"data": x, b"labels": [y[0], Payload(marker)]}, protocol=protocol))
    with pytest.raises(ValueError, match="is not a CIFAR batch and was not loaded") as ei:
        load_dataset("cifar10", "train", root=tmp_path)
    msg = str(ei.value)
    assert msg.startswith(str(evil)) and "exec" in msg.split("refers to the Python global")[1].split(",")[0]
    assert not marker.exists()  # the payload did not run
    assert len(load_dataset("cifar10", "test", root=tmp_path)) == 2  # the other split is untouched
    # the file is live: the plain pickle.load the loader used before runs it
    with open(evil, "rb") as f:
        pickle.load(f, encoding="bytes")
    assert marker.read_text() == "payload ran"


def test_a_batch_cannot_misuse_an_admitted_global(tmp_path):
    """_codecs.encode is admitted for bytes re-pickled by Python 3, as Latin-1 only."""
    folder, _ = _cifar10(tmp_path, lambda p, x, y: p.write_bytes(pickle.dumps({b"data": x, b"labels": y}, 2)))
    # {b"data": _codecs.encode("x", "rot13"), ...}: legal pickle, not what a batch holds
    bad = (b"\x80\x02}(C\x04datac_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R"
           b"C\x06labels]u.")
    assert pickle.loads(bad, encoding="bytes")[b"data"] == "k"  # what an unrestricted load gives
    (folder / "test_batch").write_bytes(bad)
    with pytest.raises(ValueError, match="is not a readable CIFAR batch") as ei:
        load_dataset("cifar10", "test", root=tmp_path)
    assert str(folder / "test_batch") in str(ei.value) and "rot13" in str(ei.value)


@pytest.mark.parametrize("how", ["python 2 release", "python 3, protocol 2", "python 3, protocol 4"])
def test_real_batches_still_load(tmp_path, how):
    if how == "python 2 release":
        def write(p, x, y):
            p.write_bytes(py2_batch(x, y))
    else:
        def write(p, x, y):
            d = {b"data": x, b"labels": y, b"batch_label": b"fake", b"filenames": [b"a.png", b"b.png"]}
            p.write_bytes(pickle.dumps(d, protocol=2 if how.endswith("2") else 4))
    _, batches = _cifar10(tmp_path, write)
    ds = load_dataset("cifar10", "train", root=tmp_path)
    xs = np.concatenate([batches[f"data_batch_{k}"][0] for k in range(1, 6)]).reshape(-1, 3, 32, 32)
    ys = [v for k in range(1, 6) for v in batches[f"data_batch_{k}"][1]]
    assert torch.equal(ds.x, (torch.from_numpy(xs).float() / 255 - 0.5) / 0.5)
    assert ds.y.tolist() == ys


@pytest.mark.parametrize("damage", ["truncated", "not a pickle", "empty"])
def test_unreadable_batch_names_the_file(tmp_path, damage):
    folder, _ = _cifar10(tmp_path, lambda p, x, y: p.write_bytes(py2_batch(x, y)))
    path = folder / "test_batch"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "not a pickle": b"<html>404</html>", "empty": b""}[damage])
    with pytest.raises(ValueError, match="is not a readable CIFAR batch") as ei:
        load_dataset("cifar10", "test", root=tmp_path)
    assert str(ei.value).startswith(str(path)) and "expected a pickled dict" in str(ei.value)
