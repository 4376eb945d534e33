"""Bad inputs and faults against the ``ebjdat`` command, classified (issue 10's table).

    python scripts/fault_cases.py [--json F]      # run from the repository root

Each case runs ``python -m ebjdat.cli ...`` (or a short Python snippet) in a fresh copy of
small fixtures (a 4-step run, damaged checkpoints, bad TOML files, a crafted CIFAR batch)
and is classified:

* ``traceback``: the process printed a Python traceback (for the API snippets: raised
  something other than a ValueError / TypeError / RuntimeError naming the argument);
* ``silent``: it should have refused (or its check failed: data changed, wrong output)
  but exited 0;
* ``unclear``: it refused, but without the expected words (``needle``) or over many lines;
* ``ok``: it refused with a one-line message holding the needle, or succeeded when it should.

The counts are what the closing note's before/after table holds: run it on two commits.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

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

    def case(name, group, args, expect="refuse", needle="", check=None, python=False, env=None, setup=None):
        out.append(dict(name=name, group=group, args=args, expect=expect, needle=needle, check=check,
                        python=python, env=env, setup=setup))

    # data loss
    before = {}
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
             needle=flag[2:], setup=copy_of("c3"))
    case("resume --config", "resume", ["train", "--resume", root / "c3", "--config", f["toml"]], needle="--config",
         setup=copy_of("c3"))
    case("resume --steps below the checkpoint's", "resume", ["train", "--resume", root / "c3", "--steps", 2],
         needle="nothing to train", setup=copy_of("c3"))

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
    # security
    case("a crafted CIFAR batch", "security",
         ["train", "--dataset", "cifar10", "--data-root", root / "cifar", "--steps", 1, "--out", root / "cf"],
         needle="data_batch", check=lambda r: not (root / "pwned_cifar").exists())
    return out


def classify(c: dict, r: subprocess.CompletedProcess) -> str:
    text = r.stdout + r.stderr
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
    args = p.parse_args(argv)
    if args.json and Path(args.json).exists():
        p.error(f"{args.json} already exists")
    root = Path(tempfile.mkdtemp(prefix="ebjdat-faults-"))
    results = []
    for c in cases(fixtures(root)):
        if c["setup"]:
            c["setup"]()
        r = sh(c["args"], root, c["env"], c["python"])
        outcome = classify(c, r)
        results.append({"name": c["name"], "group": c["group"], "outcome": outcome, "exit": r.returncode,
                        "stderr": r.stderr.strip().splitlines()[-1:] if r.stderr.strip() else []})
        print(f"{outcome:9} {c['group']:9} {c['name']}  ->  {(results[-1]['stderr'] or [''])[0][:150]}", flush=True)
    counts = {k: sum(r["outcome"] == k for r in results) for k in ("ok", "traceback", "unclear", "silent")}
    print(f"\n{len(results)} cases: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": counts, "cases": results}, indent=1))
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
