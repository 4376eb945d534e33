"""Bad inputs and faults against the ``ebjdat`` command, classified (issue 10's table).

    python scripts/fault_cases.py [--json F] [--strict] [--workers 2]     # from the repository root

Each case runs ``python -m ebjdat.cli ...`` (or a short Python snippet) in a fresh copy of
small fixtures (a 4-step run, damaged checkpoints, bad TOML files, a crafted CIFAR batch)
(two at a time by default; cases that share files run in order, one after another) and is
classified:

* ``crash``: the process died of a signal (a segfault, an abort);
* ``traceback``: the process printed a Python traceback (for the API snippets: raised
  something other than a ValueError / TypeError / RuntimeError naming the argument);
* ``silent``: it should have refused (or its check failed: data changed, wrong output)
  but exited 0;
* ``unclear``: it refused, but without the expected words (``needle``) or over many lines;
* ``ok``: it refused with a one-line message holding the needle, or succeeded when it should.

The counts (and ``data loss``: the cases of that group that are not ok) are what a
before/after table holds: run it on two commits. ``--strict`` (CI) exits 1 unless every
case is ok.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np

SMALL = ('buffer_size = 128\nlabel_batch_size = 16\nbatch_size = 16\nsgld_steps = 2\npgd_steps = 1\n'
         'eval_pgd_steps = 1\ndevice = "cpu"\nlog_every = 2\n')


REPO = Path(__file__).resolve().parents[1]   # the ebjdat under test: this script's tree


def sh(args, cwd, env=None, python=False):
    cmd = [sys.executable, "-c", args] if python else [sys.executable, "-m", "ebjdat.cli", *map(str, args)]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.run(cmd, cwd=cwd, env={**os.environ, "PYTHONPATH": path, **(env or {})},
                          capture_output=True, text=True, timeout=600)


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class Evil:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def fixtures(root: Path) -> dict:
    """The files the cases use, built with the ebjdat under test."""
    f = {"root": root, "toml": root / "small.toml"}
    f["toml"].write_text(SMALL)
    r = sh(["train", "--config", f["toml"], "--steps", 4, "--ckpt-every", 2, "--out", root / "run"], root)
    assert r.returncode == 0, r.stderr[-2000:]
    f["run"] = root / "run"
    ckpt = root / "run" / "checkpoints" / "step_00000004.pt"
    data = ckpt.read_bytes()
    (root / "trunc.pt").write_bytes(data[: len(data) // 2])
    (root / "random.pt").write_bytes(os.urandom(4096))
    (root / "empty.pt").write_bytes(b"")
    flipped = bytearray(data)
    with zipfile.ZipFile(ckpt) as z:   # flip one bit inside the largest tensor record
        info = max(z.infolist(), key=lambda i: i.file_size)
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    flipped[start + info.file_size // 2] ^= 0x10
    (root / "flipped.pt").write_bytes(bytes(flipped))
    sh(f"import torch; torch.save([1, 2], {str(root / 'notdict.pt')!r})", root, python=True)
    with zipfile.ZipFile(root / "evil.pt", "w") as z:   # a torch-style archive whose pickle runs code
        z.writestr("evil/data.pkl", pickle.dumps(Evil(root / "pwned_ckpt"), protocol=2))
        z.writestr("evil/version", "3\n")
    (root / "nockpt").mkdir()
    (root / "a_file.txt").write_text("not a folder")
    for name, text in {"typo": "batch_sise = 3\n", "big": 'batch_size = "big"\n', "float": "steps = 2.5\n",
                       "yes": 'compile = "yes"\n', "decay": "decay_epochs = 5\n"}.items():
        (root / f"{name}.toml").write_text(text)
    cifar = root / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (cifar / name).write_bytes(pickle.dumps(Evil(root / "pwned_cifar"), protocol=2))
    return f


def cifar_folder(folder: Path, batch1: bytes) -> None:
    """A CIFAR-10 folder of tiny valid batches (2 images each) whose data_batch_1 is batch1."""
    d = folder / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    good = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, 2)
    for name in [f"data_batch_{i}" for i in range(2, 6)] + ["test_batch"]:
        (d / name).write_bytes(good)
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}, 2))
    (d / "data_batch_1").write_bytes(batch1)


def cases(f: dict) -> list[dict]:
    """(name, group, argv or python snippet, expect "refuse" | "ok", needle, check)."""
    root, run = f["root"], f["run"]

    def copy_of(name):
        def make():
            dst = root / name
            if not dst.exists():
                shutil.copytree(run, dst)
            return dst
        return make

    out = []

    def case(name, group, args, expect="refuse", needle="", check=None, python=False, env=None, setup=None,
             chain=None):
        """chain: cases that share files (one makes what the next reads) name the same chain
        and run in order, one after another; every other case runs on its own."""
        out.append(dict(name=name, group=group, args=args, expect=expect, needle=needle, check=check,
                        python=python, env=env, setup=setup, chain=chain or f"case {len(out)}"))

    # data loss
    before = {}
    # run folders under faults: no run writes into another, recovery paths that work
    def linked_checkpoints():
        dst, other = copy_of("ln")(), copy_of("ln_other")()
        shutil.rmtree(dst / "checkpoints")
        (dst / "checkpoints").symlink_to(other / "checkpoints", target_is_directory=True)
        before.setdefault("ln_other", snapshot(other))
    case("resume a run whose checkpoints/ is a symlink to another run's", "data loss",
         ["train", "--resume", root / "ln", "--steps", 6], needle="is a symbolic link", setup=linked_checkpoints,
         check=lambda r: snapshot(root / "ln_other") == before["ln_other"])
    case("eval --out the training's own run folder", "data loss",
         ["eval", "--checkpoint", root / "ev", "--n", 20, "--out", root / "ev"], needle="training run folder",
         setup=lambda: before.setdefault("ev", snapshot(copy_of("ev")())),
         check=lambda r: snapshot(root / "ev") == before["ev"])
    case("sample --force over the training's own samples.png", "data loss",
         ["sample", "--checkpoint", root / "sp", "--n", 4, "--steps", 0, "--out", root / "sp" / "samples.png",
          "--force"], needle="training output",
         setup=lambda: before.setdefault("sp", snapshot(copy_of("sp")())),
         check=lambda r: snapshot(root / "sp") == before["sp"])
    holder = {}

    def hold_lock():   # another process writing into the run folder
        dst = copy_of("lk")()
        holder["p"] = subprocess.Popen(
            [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
             "fcntl.flock(f, fcntl.LOCK_EX); f.seek(0); f.truncate(); f.write('4242\\n'); f.flush(); "
             "print('held', flush=True); time.sleep(600)", str(dst / ".lock")], stdout=subprocess.PIPE, text=True)
        holder["p"].stdout.readline()
        before.setdefault("lk", snapshot(dst))

    def release_lock(r):
        holder["p"].kill()
        holder["p"].wait()
        return snapshot(root / "lk") == before["lk"]
    case("resume a run folder another process is writing into", "data loss",
         ["train", "--resume", root / "lk", "--steps", 6], needle="is in use by process 4242",
         setup=hold_lock, check=release_lock)
    case("resume a run folder whose .lock a dead process left", "resume",
         ["train", "--resume", root / "st", "--steps", 6], expect="ok",
         setup=lambda: (copy_of("st")() / ".lock").write_text("999999\n"),
         check=lambda r: (root / "st/checkpoints/step_00000006.pt").exists())
    case("checkpoint write fails (ulimit -f): earlier checkpoints kept", "traceback",
         "import resource, subprocess, sys\n"
         "lim = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (250_000, resource.RLIM_INFINITY))\n"
         f"r = subprocess.run([sys.executable, '-m', 'ebjdat.cli', 'train', '--resume', {str(root / 'fs')!r}, "
         "'--steps', '6'], preexec_fn=lim, capture_output=True, text=True)\n"
         "msg = (r.stderr.strip().splitlines() or [''])[-1]\n"
         "sys.exit(r.stderr) if r.returncode != 2 or 'Traceback' in r.stderr else None\n"
         "raise RuntimeError(msg)",
         python=True, needle="could not write checkpoint", setup=copy_of("fs"),
         check=lambda r: (root / "fs/checkpoints/step_00000004.pt").exists())
    craft = ("import sys; from ebjdat.runs.checkpoint import load_checkpoint, save_checkpoint\n"
             "sd = load_checkpoint(sys.argv[1]); cfg = sd['config']\n"
             "save_checkpoint(sys.argv[2], {**sd, **eval(sys.argv[3])})")

    def crafted(dst, change):
        return lambda: subprocess.run([sys.executable, "-c", craft, str(run / "checkpoints/step_00000004.pt"),
                                       str(dst), change], check=True, cwd=REPO)
    case("resume a checkpoint whose step is a string", "traceback",
         ["train", "--resume", root / "step_str.pt", "--steps", 6, "--out", root / "ss_out"],
         needle="field 'step'", setup=crafted(root / "step_str.pt", "{'step': '4'}"))

    def copied_in():
        dst = copy_of("vj")()
        crafted(dst / "checkpoints/step_00000006.pt", "{'step': 6, 'config': {**cfg, 'variant': 'jem'}}")()
        before.setdefault("vj", snapshot(dst))
    case("resume a jem checkpoint copied into a sadajem run folder", "data loss",
         ["train", "--resume", root / "vj", "--steps", 8], needle="belongs to another run", setup=copied_in,
         check=lambda r: snapshot(root / "vj") == before["vj"])

    def killed_early(name):
        def make():
            dst = copy_of(name)()
            for p in [*(dst / "checkpoints").iterdir(), dst / "summary.json", dst / "init.pt",
                      dst / "samples.png", dst / "energy.png"]:
                p.unlink()
        return make
    case("fresh train into a run killed before its first checkpoint", "resume",
         ["train", "--steps", 4, "--out", root / "k1"], needle=f"ebjdat train --resume {root / 'k1'}",
         setup=killed_early("k1"))
    case("resume a run killed before its first checkpoint: starts at step 0", "resume",
         ["train", "--resume", root / "k2"], expect="ok", setup=killed_early("k2"),
         check=lambda r: json.loads((root / "k2/summary.json").read_text())["step"] == 4)
    case("resume a run killed during its closing evaluation: writes the summary", "resume",
         ["train", "--resume", root / "ce"], expect="ok",
         setup=lambda: (copy_of("ce")() / "summary.json").unlink(),
         check=lambda r: json.loads((root / "ce/summary.json").read_text())["step"] == 4)
    case("a diverged run advises a new run from retry.toml", "resume",   # a snippet: the last line, not the bar
         "import subprocess, sys\n"
         f"r = subprocess.run([sys.executable, '-m', 'ebjdat.cli', 'train', '--config', {str(root / 'dv.toml')!r}, "
         f"'--steps', '4', '--out', {str(root / 'dv')!r}], capture_output=True, text=True)\n"
         "sys.exit(r.stderr) if r.returncode != 3 or 'Traceback' in r.stderr else None\n"
         "raise RuntimeError(r.stderr.strip().splitlines()[-1])",
         python=True, needle="--config " + str(root / "dv/retry.toml"),
         setup=lambda: (root / "dv.toml").write_text(SMALL + "loss_bound = 1e-9\n"),
         check=lambda r: (root / "dv/retry.toml").exists(), chain="dv")

    def raise_bound():   # what the advice says: edit loss_bound in retry.toml
        retry = root / "dv/retry.toml"
        retry.write_text(retry.read_text().replace("loss_bound = 1e-09", "loss_bound = 100000.0"))
    case("the advised command after a divergence runs", "resume",
         ["train", "--config", root / "dv/retry.toml", "--out", root / "dv_new"], expect="ok",
         setup=raise_bound, check=lambda r: (root / "dv_new/summary.json").exists(), chain="dv")
    case("train --out ''", "data loss", ["train", "--steps", 1, "--out", ""], needle="--out ''",
         check=lambda r: not (root / "checkpoints").exists())
    case("fresh run into a folder holding a run", "data loss",
         ["train", "--steps", 3, "--ckpt-every", 1, "--out", root / "c1"], needle="--resume",
         setup=lambda: before.setdefault("c1", snapshot(copy_of("c1")())),
         check=lambda r: snapshot(root / "c1") == before["c1"])
    case("resume a copied run: the copy continues, the original is untouched", "data loss",
         ["train", "--resume", root / "c2", "--steps", 6], expect="ok",
         setup=lambda: (copy_of("c2")(), before.setdefault("run", snapshot(run))),
         check=lambda r: snapshot(run) == before["run"] and (root / "c2/checkpoints/step_00000006.pt").exists())
    case("eval --out is an existing file", "data loss",
         ["eval", "--checkpoint", run, "--n", 20, "--out", root / "a_file.txt"], needle="a_file.txt",
         check=lambda r: (root / "a_file.txt").read_text() == "not a folder")
    # resume with other settings
    for flag, value in (("--variant", "jem"), ("--seed", 5), ("--dataset", "synthetic"), ("--precision", "bf16")):
        case(f"resume {flag} {value}", "resume", ["train", "--resume", root / "c3", "--steps", 6, flag, value],
             needle=flag[2:], setup=copy_of("c3"), chain="c3")
    case("resume --config", "resume", ["train", "--resume", root / "c3", "--config", f["toml"]], needle="--config",
         setup=copy_of("c3"), chain="c3")
    case("resume --steps below the checkpoint's", "resume", ["train", "--resume", root / "c3", "--steps", 2],
         needle="nothing to train", setup=copy_of("c3"), chain="c3")

    def cut_metrics():
        dst = copy_of("c4")()
        (dst / "checkpoints" / "step_00000004.pt").unlink()
        (dst / "summary.json").unlink(missing_ok=True)
        (dst / "metrics.jsonl").write_text('{"step": 2, "lr": 0.1}\n{"step": 4, "lo')
    case("resume after a kill mid-line in metrics.jsonl", "resume", ["train", "--resume", root / "c4"],
         expect="ok", setup=cut_metrics)
    # tracebacks that must become messages
    for name, path, needle in (("random bytes", "random.pt", "random.pt"), ("truncated", "trunc.pt", "trunc.pt"),
                               ("empty file", "empty.pt", "empty.pt"), ("not a dict", "notdict.pt", "notdict.pt"),
                               ("folder without checkpoints", "nockpt", "nockpt")):
        case(f"sample a {name} checkpoint", "traceback", ["sample", "--checkpoint", root / path,
                                                          "--out", root / "s.png"], needle=needle)
        case(f"eval a {name} checkpoint", "traceback", ["eval", "--checkpoint", root / path, "--n", 20,
                                                        "--out", root / "e"], needle=needle)
    case("a malicious checkpoint", "traceback", ["eval", "--checkpoint", root / "evil.pt", "--n", 20],
         needle="unsafe", check=lambda r: not (root / "pwned_ckpt").exists())
    case("sample --n 0", "traceback", ["sample", "--checkpoint", run, "--n", 0, "--out", root / "s0.png"], needle="--n")
    case("sample --y 99", "traceback", ["sample", "--checkpoint", run, "--y", 99, "--out", root / "s1.png"], needle="--y")
    for name in ("typo", "big", "float", "yes", "decay"):
        key = {"typo": "batch_size", "big": "batch_size", "float": "steps", "yes": "compile", "decay": "decay_epochs"}[name]
        case(f"TOML {name}", "traceback", ["train", "--config", root / f"{name}.toml", "--out", root / f"t_{name}"],
             needle=key)
    case("train --device cuda without a GPU", "traceback",
         ["train", "--device", "cuda", "--steps", 1, "--out", root / "d1"], needle="cuda")
    case("train --backend triton on the CPU", "traceback",
         ["train", "--backend", "triton", "--steps", 1, "--out", root / "d2"], needle="triton", env={"TRITON_INTERPRET": "0"})
    case("demo --backend triton on the CPU", "traceback", ["demo", "--backend", "triton"], needle="triton",
         env={"TRITON_INTERPRET": "0"})
    case("eval --sample-steps -5", "traceback", ["eval", "--checkpoint", run, "--n", 20, "--sample-steps", -5],
         needle="sample-steps")
    # silent wrong results
    case("eval --eps 2", "silent", ["eval", "--checkpoint", run, "--n", 20, "--eps", 2], needle="eps")
    case("sample --steps -3", "silent", ["sample", "--checkpoint", run, "--steps", -3, "--out", root / "s2.png"],
         needle="--steps")
    case("sample --n 5000 from a 128-row buffer", "silent",
         ["sample", "--checkpoint", run, "--n", 5000, "--steps", 0, "--out", root / "s3.png"], needle="--fresh",
         check=lambda r: r.returncode != 0 or "wrote 5000" in r.stdout)
    case("sample --out x.jpg holds JPEG data", "silent",
         ["sample", "--checkpoint", run, "--n", 4, "--steps", 0, "--out", root / "x.jpg"], expect="ok",
         check=lambda r: r.returncode != 0 or (root / "x.jpg").read_bytes()[:3] == b"\xff\xd8\xff")
    case("a checkpoint with a flipped bit", "silent", ["eval", "--checkpoint", root / "flipped.pt", "--n", 20],
         needle="checksum")
    case("PhiloxGenerator(2**70)", "silent", "from ebjdat import ops; ops.PhiloxGenerator(2**70)",
         python=True, needle="seed")
    case("ebjdat info without a GPU", "silent", ["info"], expect="ok",
         check=lambda r: "host path" in r.stdout)
    case("in-place op on a leaf that requires grad (cuda backend)", "silent",
         "import torch; from ebjdat import ops; x = torch.zeros(4, requires_grad=True)\n"
         "with ops.use_backend('cuda'): ops.sgld_step_(x, torch.ones(4), step_size=1.0)",
         python=True, needle="leaf")
    case("SGLD with y out of range", "silent",
         "import torch, ebjdat; from ebjdat.energy import ClassifierEnergy\n"
         "s = ebjdat.SGLD(ClassifierEnergy(torch.nn.Linear(4, 3)), n_steps=1, step_size=0.1)\n"
         "s.sample(x_init=torch.zeros(2, 4), y=torch.tensor([0, 7]))", python=True, needle="y")
    # every value range-checked where it is read; messages name the user's key
    nan_ckpts = (
        "import torch; from ebjdat.runs.checkpoint import load_checkpoint, save_checkpoint\n"
        f"sd = load_checkpoint({str(run / 'checkpoints' / 'step_00000004.pt')!r})\n"
        "m = {k: torch.full_like(v, float('nan')) if v.is_floating_point() else v for k, v in sd['model'].items()}\n"
        f"save_checkpoint({str(root / 'nan_w.pt')!r}, {{**sd, 'model': m}})\n"
        "r = dict(sd['ranks'][0]); b = r['buffer']['buffer'].clone(); b[0] = float('nan')\n"
        "r['buffer'] = {**r['buffer'], 'buffer': b}\n"
        f"save_checkpoint({str(root / 'nan_b.pt')!r}, {{**sd, 'ranks': [r, *sd['ranks'][1:]]}})\n")

    def nan_checkpoints():
        if not (root / "nan_b.pt").exists():
            sh(nan_ckpts, root, python=True)

    def toml(name, text):
        return lambda: (root / name).write_text(text)

    case("TOML decay_rate = -1", "silent", ["train", "--config", root / "neg_decay.toml", "--out", root / "t_nd"],
         needle="decay_rate", setup=toml("neg_decay.toml", "decay_rate = -1\n"),
         check=lambda r: not (root / "t_nd").exists())
    case("TOML decay_epochs = [-3]", "silent", ["train", "--config", root / "neg_epochs.toml", "--out", root / "t_ne"],
         needle="decay_epochs", setup=toml("neg_epochs.toml", "decay_epochs = [-3]\n"))
    case("TOML buffer_size 7 below batch_size 16", "silent",
         ["train", "--config", root / "small_buf.toml", "--out", root / "t_sb"], needle="buffer_size",
         setup=toml("small_buf.toml", "buffer_size = 7\nbatch_size = 16\n"))
    case("bench --budget-s nan", "silent", ["bench", "step", "--quick", "--budget-s", "nan"], needle="--budget-s")
    case("sample a checkpoint with NaN weights", "silent",
         ["sample", "--checkpoint", root / "nan_w.pt", "--out", root / "nan.png"], needle="non-finite",
         setup=nan_checkpoints, check=lambda r: not (root / "nan.png").exists(), chain="nan")
    case("TOML model wrn, width 0", "traceback", ["train", "--config", root / "wrn0.toml", "--out", root / "t_w0"],
         needle="width", setup=toml("wrn0.toml", 'model = "wrn"\nwidth = 0\n'))
    case("bench --profile names a file", "traceback", ["bench", "step", "--quick", "--profile", root / "a_file.txt"],
         needle="--profile", check=lambda r: (root / "a_file.txt").read_text() == "not a folder")
    case("eval a checkpoint with NaN weights", "traceback",
         ["eval", "--checkpoint", root / "nan_w.pt", "--n", 20, "--out", root / "e_nw"], needle="non-finite",
         setup=nan_checkpoints, chain="nan")
    case("eval a checkpoint with NaN buffer rows", "traceback",
         ["eval", "--checkpoint", root / "nan_b.pt", "--n", 20, "--out", root / "e_nb"], needle="replay buffer",
         setup=nan_checkpoints, chain="nan")
    case("sample --fresh --n 100000000", "traceback",
         ["sample", "--checkpoint", run, "--fresh", "--n", 100000000, "--out", root / "huge.png"], needle="at most")
    case("train --seed 2**64", "unclear", ["train", "--seed", 2**64, "--steps", 1, "--out", root / "t_seed"],
         needle="seed")
    case("sample --seed 2**64", "unclear", ["sample", "--checkpoint", run, "--seed", 2**64, "--out", root / "s_seed.png"],
         needle="--seed")
    case("TOML sgld_clip = -1 names sgld_clip", "unclear",
         ["train", "--config", root / "clip.toml", "--out", root / "t_clip"], needle="sgld_clip",
         setup=toml("clip.toml", "sgld_clip = -1.0\n"), check=lambda r: "grad_clip" not in r.stderr)
    case("TOML eval_eps = 2 names eval_eps", "unclear",
         ["train", "--config", root / "evaleps.toml", "--out", root / "t_ee"], needle="eval_eps",
         setup=toml("evaleps.toml", "eval_eps = 2.0\n"))
    case("demo --steps 5", "unclear", ["demo", "--steps", 5, "--backend", "torch"], expect="ok",
         check=lambda r: "demo OK" in r.stdout)
    case("train --threads 4096", "unclear", ["train", "--threads", 4096, "--steps", 2, "--out", root / "t_thr"],
         needle="threads")
    # data files: bounded allocations, dtypes and ranges checked, the file named
    for name, batch1, needle, group in (
            ("a CIFAR pickle whose BINBYTES8 claims 2**40 bytes", b"\x80\x04}(C\x04data\x8e"
             + (2**40).to_bytes(8, "little") + b"xx", "1099511627776 bytes", "traceback"),
            ("a CIFAR pickle repeating one row through its memo",
             pickle.dumps({b"data": [[7] * 3072] * 2000, b"labels": [1] * 2000}, 2), "data_batch_1", "traceback"),
            ("a CIFAR batch of float32 data in [0, 1]",
             pickle.dumps({b"data": np.random.rand(2, 3072).astype(np.float32), b"labels": [1, 2]}, 2),
             "holds float32 values", "silent"),
            ("a CIFAR batch with string labels",
             pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["cat", "dog"]}, 2),
             "field 'labels' holds str values", "unclear")):
        slug = f"cf_{len(out)}"
        case(name, group, ["train", "--dataset", "cifar10", "--data-root", root / slug, "--steps", 1,
                           "--out", root / f"{slug}_run"], needle=needle,
             setup=lambda slug=slug, batch1=batch1: cifar_folder(root / slug, batch1),
             check=lambda r, slug=slug: not (root / f"{slug}_run").exists())
    case("a 16-bit grey PNG decodes to 8 bits, not saturated", "silent",
         "import numpy as np; from PIL import Image; from ebjdat.data.imagefiles import decode_image\n"
         f"p = {str(root / 'grey16.png')!r}\n"
         "Image.fromarray(np.full((8, 8), 32896, np.uint16)).save(p)\n"
         "v = decode_image(p, 8)\nassert abs(float(v.mean()) - 128) <= 1, v.mean()",
         python=True, expect="ok")
    # memory safety at the ops' boundary: refused before any pointer is touched
    ops_pre = "import math, torch; from ebjdat import ops\ninf = math.inf\n"
    case("torch.ops sgld_step_: a 4-element grad for a 10**6-element x", "crash",
         ops_pre + "torch.ops.ebjdat.sgld_step_(torch.zeros(10**6), torch.ones(4), None, 1.0, 0.0, inf, -inf, inf, "
         "'cpu')", python=True, needle="grad has shape")
    case("torch.ops sgld_step_: noise with a 1-element state", "crash",
         ops_pre + "torch.ops.ebjdat.sgld_step_(torch.zeros(100), torch.ones(100), torch.zeros(1, dtype=torch.int64), "
         "1.0, 0.1, inf, -inf, inf, 'cpu')", python=True, needle="state")
    case("torch.ops sgld_step_: noise without a state", "crash",
         ops_pre + "torch.ops.ebjdat.sgld_step_(torch.zeros(100), torch.ones(100), None, 1.0, 0.1, inf, -inf, inf, "
         "'cpu')", python=True, needle="state")
    case("ebjdat._C.sgld_step_host: a grad count below x's", "crash",
         ops_pre + "import ebjdat._C as C\nx, g = torch.zeros(10**6), torch.ones(4)\n"
         "C.sgld_step_host(x.data_ptr(), g.data_ptr(), 0, x.numel(), g.numel(), 0, 0, 0, 1.0, 0.0, inf, -inf, inf, "
         "0, 0, 0, 1)", python=True, needle="grad has 4 elements")
    case("ebjdat._C.pgd_init_host: a 1-element state", "crash",
         ops_pre + "import ebjdat._C as C\nx, st = torch.zeros(64), torch.zeros(1, dtype=torch.int64)\n"
         "C.pgd_init_host(x.data_ptr(), x.data_ptr(), st.data_ptr(), 64, 64, 1, 1, 0, 0.1, False, 0.0, 1.0, 0, 0, 0, 1)",
         python=True, needle="state has 1 elements")
    case("torch.ops pgd_step_: eps -1, norm 'bogus'", "silent",
         ops_pre + "x = torch.zeros(4, 3)\ntorch.ops.ebjdat.pgd_step_(x, torch.ones(4, 3), x.clone(), 0.1, -1.0, "
         "'bogus', 0.0, 1.0, 'torch')", python=True, needle="eps")
    for be in ("cpu", "torch"):
        case(f"an inference tensor updated outside inference mode ({be} backend)", "silent",
             ops_pre + "with torch.inference_mode():\n    x = torch.zeros(8)\n"
             f"with ops.use_backend({be!r}):\n    ops.sgld_step_(x, torch.ones(8), step_size=1.0)",
             python=True, needle="inference")
        case(f"the Philox offset past 2**63 ({be} backend)", "silent",
             ops_pre + "g = ops.PhiloxGenerator(0)\ng.state[1] = 2**63 - 2\n"
             f"with ops.use_backend({be!r}):\n    ops.sgld_step_(torch.zeros(100), torch.ones(100), step_size=1.0, "
             "noise_std=0.1, generator=g)", python=True, needle="offset")
    case("a restored state with an offset near 2**63", "silent",
         ops_pre + "g = ops.PhiloxGenerator(0)\ns = g.get_state()\ns[1] = 2**63 - 2\ng.set_state(s)",
         python=True, needle="offset")
    case("PhiloxGenerator(0, device='cuda') without a GPU", "traceback",
         ops_pre + "if torch.cuda.is_available():\n    raise ValueError('device=cuda: this machine has a GPU, "
         "nothing to refuse')\nops.PhiloxGenerator(0, device='cuda')", python=True, needle="cuda")
    # security
    case("a crafted CIFAR batch", "security",
         ["train", "--dataset", "cifar10", "--data-root", root / "cifar", "--steps", 1, "--out", root / "cf"],
         needle="data_batch", check=lambda r: not (root / "pwned_cifar").exists())
    return out


OUTCOMES = ("ok", "traceback", "unclear", "silent", "crash")


def classify(c: dict, r: subprocess.CompletedProcess) -> str:
    text = r.stdout + r.stderr
    if r.returncode < 0:                    # killed by a signal: a segfault, an abort
        return "crash"
    if c["python"] and r.returncode != 0:   # an API call: the right exception is the answer
        last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        if last.split(":")[0] in ("ValueError", "TypeError", "RuntimeError"):
            return "ok" if c["needle"] in last else "unclear"
        return "traceback"                  # IndexError, AttributeError, a crash: no message
    if "Traceback (most recent call last)" in text:
        return "traceback"
    good = c["check"] is None or c["check"](r)
    if c["expect"] == "ok":
        return "ok" if r.returncode == 0 and good else ("silent" if r.returncode == 0 else "unclear")
    if r.returncode == 0 or not good:
        return "silent"
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    return "ok" if c["needle"] in r.stderr and len(lines) <= 2 else "unclear"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write every case's outcome here (a new file)")
    p.add_argument("--strict", action="store_true", help="exit 1 unless every case is ok (CI)")
    p.add_argument("--workers", type=int, default=2, help="cases run at once, each a process (default 2)")
    args = p.parse_args(argv)
    if args.json and Path(args.json).exists():
        p.error(f"{args.json} already exists")
    if args.workers < 1:
        p.error(f"--workers {args.workers}: must be >= 1")
    root = Path(tempfile.mkdtemp(prefix="ebjdat-faults-"))
    all_cases = cases(fixtures(root))
    chains = {}
    for i, c in enumerate(all_cases):
        chains.setdefault(c["chain"], []).append(i)
    results = [None] * len(all_cases)
    lock = threading.Lock()

    def run_chain(indices):   # a chain's cases in order; chains run side by side (--workers)
        for i in indices:
            c = all_cases[i]
            if c["setup"]:
                c["setup"]()
            r = sh(c["args"], root, c["env"], c["python"])
            outcome = classify(c, r)
            results[i] = {"name": c["name"], "group": c["group"], "outcome": outcome, "exit": r.returncode,
                          "stderr": r.stderr.strip().splitlines()[-1:] if r.stderr.strip() else []}
            with lock:
                print(f"{outcome:9} {c['group']:9} {c['name']}  ->  {(results[i]['stderr'] or [''])[0][:150]}",
                      flush=True)
    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        for f in [pool.submit(run_chain, idx) for idx in chains.values()]:
            f.result()   # a setup or check that raised: the script fails, naming it
    counts = {k: sum(r["outcome"] == k for r in results) for k in OUTCOMES}
    counts["data loss"] = sum(r["group"] == "data loss" and r["outcome"] != "ok" for r in results)
    print(f"\n{len(results)} cases: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": counts, "cases": results}, indent=1))
    shutil.rmtree(root, ignore_errors=True)
    if args.strict and counts["ok"] != len(results):
        print("fault_cases: every case must be ok (--strict)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
