"""Checkpoints: round trip, weights_only refusal, atomic writes under SIGKILL, prune."""
import collections
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ebjdat.train.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune,
    save_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]


class Opaque:  # a Python object weights_only loading refuses
    pass


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
    with pytest.raises(ValueError, match="holds Python objects that weights_only loading refuses") as ei:
        load_checkpoint(path)
    msg = str(ei.value)
    assert str(path) in msg and "Opaque" in msg and "if you trust the file" in msg
    assert "only tensors and plain values" in msg


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


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file(tmp_path, damage):
    path = tmp_path / "step_00000005.pt"
    save_checkpoint(path, {"x": torch.randn(1000), "step": 5})
    data = path.read_bytes()
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytes(random.Random(0).randrange(256) for _ in range(2000))
    else:
        data = b""
    path.write_bytes(data)
    with pytest.raises(ValueError, match="cannot be") as ei:
        load_checkpoint(path)
    assert str(path) in str(ei.value)


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
from ebjdat.train.checkpoint import save_checkpoint
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
