"""Checkpoints: round trip, checksum, bad files and unsafe pickles refused with clear
errors, atomic writes under SIGKILL, prune."""
import collections
import math
import os
import pickle
import random
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ebjdat.runs.checkpoint import (
    CHECKSUM_KEY,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune,
    resolve_checkpoint,
    save_checkpoint,
    state_digest,
)

ROOT = Path(__file__).resolve().parents[1]


class Opaque:  # a Python object weights_only loading refuses
    pass


class Payload:
    """Unpickling it runs exec, which writes ``marker``: what a malicious file does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('payload ran')",)


def sample_state():
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return {
        "step": 1234,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "philox": torch.tensor([7, 42], dtype=torch.int64)},
        "metrics": {"loss": 0.25, "acc": [0.5, 0.75], "name": "sada-jem", "best": None, "flags": (True, False)},
        "config": collections.OrderedDict(lr=0.01, milestones=[50, 100], dtype=torch.bfloat16, device=torch.device("cpu")),
        "half": torch.arange(6, dtype=torch.float16).view(2, 3),
        "nan": float("nan"),
    }


def assert_same(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


def test_round_trip(tmp_path):
    state = sample_state()
    path = checkpoint_path(tmp_path / "run", 1234)
    save_checkpoint(path, state)
    assert path.name == "step_00001234.pt" and path.is_file()
    assert_same(state, load_checkpoint(path))
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    # an optimizer restored from it continues identically
    opt = torch.optim.SGD(torch.nn.Linear(4, 3).parameters(), lr=0.5)
    opt.load_state_dict(load_checkpoint(path)["optimizer"])
    assert opt.param_groups[0]["lr"] == 0.1


def test_overwrite_keeps_newest(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"v": 1})
    save_checkpoint(path, {"v": 2})
    assert load_checkpoint(path) == {"v": 2}


def test_pickle_payload_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "obj": Opaque()}, path)  # written by someone else's torch.save
    with pytest.raises(ValueError, match="was refused as unsafe") as ei:
        load_checkpoint(path)
    msg = str(ei.value)
    assert str(path) in msg and "GLOBAL tests.test_train_checkpoint.Opaque" in msg
    assert "only tensors and plain values" in msg and "only if you trust its source" in msg
    assert "corrupt" not in msg


def _zip_with_pickle(path, data):
    """A zip laid out like torch.save's, its data.pkl replaced by ``data``."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data)
        z.writestr("archive/version", "3\n")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")  # torch's note on the protocol-4 variant
@pytest.mark.parametrize("how", ["torch.save", "pickle in a zip", "bare pickle"])
def test_malicious_pickle_refused_and_not_run(tmp_path, how):
    marker = tmp_path / "payload_ran"
    state = {"step": 1, "model": {"w": torch.ones(2)}, "evil": Payload(marker)}
    path = tmp_path / "step_00000001.pt"
    if how == "torch.save":
        torch.save(state, path)
    elif how == "pickle in a zip":
        _zip_with_pickle(path, pickle.dumps(state, protocol=4))
    else:
        path.write_bytes(pickle.dumps(state, protocol=2))
    with pytest.raises(ValueError, match="was refused as unsafe") as ei:
        load_checkpoint(path)
    msg = str(ei.value)
    assert str(path) in msg and "GLOBAL builtins.exec" in msg and "corrupt" not in msg
    assert "torch.load(path, weights_only=False)" in msg
    assert not marker.exists()  # the payload did not run
    # the file is live: unpickled without the guard, it does run
    if how == "torch.save":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(zipfile.ZipFile(path).read("archive/data.pkl") if how == "pickle in a zip" else path.read_bytes())
    assert marker.read_text() == "payload ran"


def test_save_refuses_what_load_would_refuse(tmp_path):
    for bad, where in [({"a": {"b": Opaque()}}, "state['a']['b']"), ({"x": np.zeros(3)}, "state['x']"),
                       ({"s": [1, np.float64(2.0)]}, "state['s'][1]")]:
        with pytest.raises(TypeError, match="plain values") as ei:
            save_checkpoint(tmp_path / "bad.pt", bad)
        assert where in str(ei.value)
    assert not any(tmp_path.iterdir())  # nothing written
    with pytest.raises(TypeError, match="state must be a dict"):
        save_checkpoint(tmp_path / "bad.pt", [1, 2])


def test_missing_file(tmp_path):
    path = tmp_path / "nope" / "step_00000001.pt"
    with pytest.raises(FileNotFoundError, match="step_00000001.pt"):
        load_checkpoint(path)


def _damaged(path, damage):
    """Overwrite the checkpoint at path with a damaged or foreign file."""
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "cut end":  # torch's zip reader fails with a bare OSError (EINVAL) here
        path.write_bytes(data[:-10])
    elif damage == "garbage":
        path.write_bytes(bytes(random.Random(0).randrange(256) for _ in range(2000)))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "text":
        path.write_text("step: 5\n")
    elif damage == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("notes/readme.txt", "not a checkpoint")
    elif damage == "list":
        torch.save([torch.ones(2), 5], path)
    else:
        raise AssertionError(damage)


@pytest.mark.parametrize("damage, expected", [
    ("truncate", "is a truncated or damaged zip archive"),
    ("cut end", "is a truncated or damaged zip archive"),
    ("garbage", "is not a torch.save file: expected a zip archive"),
    ("text", r"is not a torch.save file: expected a zip archive \(starting with b'PK'\), found b'step: 5"),
    ("empty", r"is empty \(0 bytes\): expected a torch.save zip archive"),
    ("zip", r"is a zip archive but not a torch.save file: expected <name>/data.pkl .* it holds notes/readme.txt"),
    ("list", "holds a list, not a dict: not an ebjdat checkpoint"),
])
def test_bad_file_says_what_is_wrong(tmp_path, damage, expected):
    path = tmp_path / "step_00000005.pt"
    save_checkpoint(path, {"x": torch.randn(1000), "step": 5})
    _damaged(path, damage)
    with pytest.raises(ValueError, match=expected) as ei:
        load_checkpoint(path)
    assert str(ei.value).startswith(f"checkpoint {path} ")
    assert "unsafe" not in str(ei.value)


def _record_offset(path, suffix):
    """Where the data of the zip record whose name ends with suffix starts in the file."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(suffix))
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        head = f.read(30)
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def test_checksum_catches_a_flipped_bit_in_tensor_data(tmp_path):
    state = {"step": 7, "w": torch.arange(256, dtype=torch.float32)}
    path = tmp_path / "step_00000007.pt"
    save_checkpoint(path, state)
    raw = torch.load(path, weights_only=True)  # the key is in the file ...
    assert list(raw) == ["step", "w", CHECKSUM_KEY] and raw[CHECKSUM_KEY] == state_digest(state)
    assert CHECKSUM_KEY not in load_checkpoint(path)  # ... not in what callers get
    start, size = _record_offset(path, "data/0")
    assert size == 256 * 4
    data = bytearray(path.read_bytes())
    data[start + 4 * 100] ^= 0x01  # the lowest mantissa bit of w[100]
    path.write_bytes(data)
    flipped = torch.load(path, weights_only=True)  # torch reads it without a word ...
    assert flipped["w"][100] != 100.0 and torch.equal(flipped["w"][:100], state["w"][:100])
    with pytest.raises(ValueError) as ei:  # ... load_checkpoint does not
        load_checkpoint(path)
    assert str(ei.value) == (f"checkpoint {path} is corrupt: its contents do not match the checksum written with "
                             f"it (a flipped bit or a damaged copy); use an older checkpoint of the run")


def test_file_without_checksum_still_loads_checked_by_zip_crc(tmp_path):
    state = sample_state()
    path = tmp_path / "foreign.pt"
    torch.save(state, path)  # another tool, or a checkpoint from before checksums
    assert_same(state, load_checkpoint(path))
    legacy = tmp_path / "legacy.pt"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    assert_same(state, load_checkpoint(legacy))
    # a flipped bit in its tensor data: torch does not notice, the zip's CRC-32 does
    start, _ = _record_offset(path, "data/0")
    data = bytearray(path.read_bytes())
    data[start] ^= 0x10
    path.write_bytes(data)
    torch.load(path, weights_only=True)
    with pytest.raises(ValueError, match=r"is corrupt: its record '[^']*data/0' fails the zip's CRC check") as ei:
        load_checkpoint(path)
    assert str(path) in str(ei.value)


def test_digest_covers_every_dtype_and_ignores_layout():
    tensors = {
        "bf16": torch.randn(3, 4).to(torch.bfloat16), "fp16": torch.randn(5).half(), "i64": torch.arange(6),
        "bool": torch.tensor([True, False, True]), "scalar": torch.tensor(2.5), "i64_0d": torch.tensor(3),
        "empty": torch.zeros(0, 3), "c64": torch.randn(2, dtype=torch.complex64),
    }
    base = state_digest(tensors)
    for k, t in tensors.items():
        if t.numel() == 0:
            continue
        changed = dict(tensors)
        bumped = t.clone().reshape(-1)
        bumped[0] = ~bumped[0] if t.dtype == torch.bool else bumped[0] + 1
        changed[k] = bumped.reshape(t.shape)
        assert state_digest(changed) != base, k
        assert state_digest({**tensors, k: t.reshape(-1) if t.dim() != 1 else t.reshape(1, -1)}) != base, k  # shape
    assert state_digest({**tensors, "i64": tensors["i64"].to(torch.int32)}) != base  # dtype
    assert state_digest({**tensors, "empty": torch.zeros(3, 0)}) != base  # empty, other shape
    # layout and device do not matter: a transposed view and its contiguous copy agree
    t = torch.randn(4, 3)
    assert state_digest({"t": t.t()}) == state_digest({"t": t.t().contiguous()})
    # plain values: type, value and key order count
    assert state_digest({"a": 1, "b": 2}) != state_digest({"b": 2, "a": 1})
    assert state_digest({"a": 1}) != state_digest({"a": True}) != state_digest({"a": 1.0})
    assert state_digest({"a": [1, 2]}) != state_digest({"a": (1, 2)})
    assert state_digest({"a": "x", "b": ""}) != state_digest({"a": "", "b": "x"})
    # a set hashes the same whatever order it iterates in
    s1, s2 = {0, 8}, {8, 0}
    assert list(s1) != list(s2) and state_digest({"s": s1}) == state_digest({"s": s2})


def test_checksum_key_is_reserved(tmp_path):
    with pytest.raises(ValueError, match="'_sha256' is reserved"):
        save_checkpoint(tmp_path / "ck.pt", {"_sha256": "mine"})
    assert not any(tmp_path.iterdir())


def test_every_damage_is_an_error_or_harmless(tmp_path):
    """Bit flips anywhere in a checkpoint (a sample of positions) and cuts at many lengths:
    loading raises a ValueError naming the file or returns the state saved, nothing else."""
    state = sample_state()
    src = tmp_path / "src.pt"
    save_checkpoint(src, state)
    data = src.read_bytes()
    path = tmp_path / "step_00000001.pt"
    rng = random.Random(0)
    outcomes = collections.Counter()
    damaged = [bytes(data[:n]) for n in range(0, len(data), max(1, len(data) // 40))]
    for pos in rng.sample(range(len(data)), 300):
        b = bytearray(data)
        b[pos] ^= 1 << rng.randrange(8)
        damaged.append(bytes(b))
    for d in damaged:
        path.write_bytes(d)
        try:
            got = load_checkpoint(path)
        except ValueError as e:
            assert str(e).startswith(f"checkpoint {path} "), str(e)
            assert "unsafe" not in str(e), str(e)
            outcomes["error"] += 1
        else:
            assert_same(state, got)
            outcomes["same"] += 1
    assert outcomes["error"] > len(damaged) // 2, outcomes


def test_bad_map_location_is_named(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"w": torch.ones(2)})
    with pytest.raises(ValueError, match=r"looks like an intact torch.save archive; check map_location='bogus'"):
        load_checkpoint(path, map_location="bogus")


def test_folder_without_checkpoints(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / ".step_00000002.pt.x1.tmp").write_bytes(b"PK")  # an interrupted save
    (run / "notes.txt").write_text("no checkpoint here")
    with pytest.raises(FileNotFoundError) as ei:
        resolve_checkpoint(run)
    msg = str(ei.value)
    assert f"no checkpoint (step_N.pt) in {run} or {run / 'checkpoints'}" in msg
    assert "pass a run folder that training wrote checkpoints into" in msg
    save_checkpoint(checkpoint_path(run / "checkpoints", 3), {"step": 3})
    assert resolve_checkpoint(run) == run / "checkpoints" / "step_00000003.pt"
    with pytest.raises(IsADirectoryError, match="is a folder; pass a file"):
        load_checkpoint(run)


def test_crash_before_replace_leaves_old_checkpoint(tmp_path):
    old = checkpoint_path(tmp_path, 100)
    save_checkpoint(old, {"step": 100, "x": torch.ones(10)})
    # a save of step 200 killed before os.replace: only its temp file exists, half written
    stray = tmp_path / ".step_00000200.pt.k3j2h1.tmp"
    stray.write_bytes(b"PK\x03\x04" + os.urandom(500))
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "step_300.pt").write_bytes(b"")  # not our naming: ignored
    assert latest_checkpoint(tmp_path) == old
    assert load_checkpoint(old)["step"] == 100
    assert prune(tmp_path, keep=1) == [stray]
    assert not stray.exists() and old.exists()


def test_latest_and_prune(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
    for s in (5, 100, 20, 100_000_000, 7):  # the last has 9 digits
        save_checkpoint(checkpoint_path(tmp_path, s), {"step": s})
    assert latest_checkpoint(tmp_path) == tmp_path / "step_100000000.pt"
    deleted = prune(tmp_path, keep=3)
    assert sorted(p.name for p in deleted) == ["step_00000005.pt", "step_00000007.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000020.pt", "step_00000100.pt", "step_100000000.pt"]
    assert prune(tmp_path, keep=3) == []
    with pytest.raises(ValueError, match="keep"):
        prune(tmp_path, keep=0)
    with pytest.raises(ValueError, match="step"):
        checkpoint_path(tmp_path, -1)


WRITER = """
import sys, torch
from ebjdat.runs.checkpoint import save_checkpoint
path, n = sys.argv[1], int(sys.argv[2])
i = 0
while True:
    # 8-12 MB per file: a kill often lands inside torch.save or fsync
    m = n + (i % 3) * n // 4
    save_checkpoint(path, {"i": i, "x": torch.full((m,), float(i)), "tail": {"i": i, "s": "ok"}})
    if i == 0:
        print("ready", flush=True)
    i += 1
"""


def check_consistent(state):
    i = state["i"]
    x = state["x"]
    assert state["tail"] == {"i": i, "s": "ok"}
    assert x[0].item() == i and x[-1].item() == i and bool((x == i).all())


def test_atomic_under_sigkill(tmp_path):
    """Writers killed with SIGKILL at random moments leave a complete checkpoint."""
    if os.name == "nt":
        pytest.skip("SIGKILL is POSIX")
    rng = random.Random(1234)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    n_writers = 3
    paths = [checkpoint_path(tmp_path / f"w{k}", 1) for k in range(n_writers)]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(p), str(2_000_000)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in paths]
    try:
        for proc in procs:
            line = proc.stdout.readline()
            assert line.strip() == "ready", proc.stderr.read()
        seen = []
        for proc, path in zip(procs, paths):
            t_end = time.monotonic() + rng.uniform(0.05, 0.6)
            while time.monotonic() < t_end:  # readers meanwhile always see a whole file
                check_consistent(load_checkpoint(path))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            assert proc.returncode == -signal.SIGKILL
            state = load_checkpoint(path)
            check_consistent(state)
            assert latest_checkpoint(path.parent) == path
            seen.append((state["i"], len(list(path.parent.glob(".*.tmp")))))
        print("kills at (last complete save, stray temp files):", seen)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
