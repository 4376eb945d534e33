"""All GPU work in one budgeted command on a GPU machine (run it through device_check.sh).

    bash scripts/device_check.sh                 # on the GPU machine: results into $OUT
    bash scripts/device_check.sh --plan          # the stages and their budgets; runs nothing
    bash scripts/device_check.sh --cpu-smoke     # every stage's code path on the CPU, tiny sizes
    bash scripts/device_check.sh --command       # the command line to run there, commit filled in
    bash scripts/device_check.sh --only bench-ops,summary   # a rerun of some stages

Stages, in order of value, each under its own time budget (killed with its process group
when it runs over) and recorded as passed / failed / timed-out / skipped-for-time:

  env          nvidia-smi, versions, commit and dirty flag
  build        pip install --no-build-isolation --no-deps -e . (ebjdat._C for sm_90), the
               carried wheels in .whl/ (torchattacks) into a target folder on PYTHONPATH
  gpu-tests    every test marked gpu (the CPU-only tests are not rerun there)
  bench-ops    ebjdat bench ops: each op and backend vs eager torch and torch.compile
  bench-loops  ebjdat bench loops overhead attack: SGLD-10 and PGD-10 on WRN-28-10, eager
               vs CUDA graph (no torch.compile), per-step sampler overhead, torchattacks
  bench-step   ebjdat bench step: published-loop baseline, fast fp32, +bf16,
               +channels_last, +cuda_graph, +compile (if its reserve is left): each
               row with dynamo's graphs and breaks and its first loss against fp32
  summary      device_check.json (every figure and the environment) and summary.md

Files written to the output folder (--out, default $OUT; it must be empty or new):
device_check.json, summary.md, env.txt, build.log, gpu-tests.log, bench.log (6 of the 8
files at most that a run may bring back). The markdown summary is printed last.

Standard library only: it runs before the package is installed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = {  # name: budget in seconds; the total stays under 9 minutes
    "env": 10,
    "build": 80,
    "gpu-tests": 120,
    "bench-ops": 70,
    "bench-loops": 60,
    "bench-step": 190,   # with its +compile stage (suite_step.COMPILE_RESERVE_S)
    "summary": 10,
}
MAX_TOTAL_S = 540
GRACE_S = 5          # a stage's process group gets SIGTERM at its budget, SIGKILL this later
WHEELS = ROOT / ".whl"


# ----------------------------------------------------------------------------- helpers

def run_cmd(cmd: list[str], timeout: float, log: Path, env: dict) -> tuple[str, int | None]:
    """Run cmd (its own process group) appending its output to log: ("passed" | "failed" |
    "timed-out", exit code)."""
    with open(log, "a") as f:
        f.write(f"\n$ {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            _kill(proc)
            f.write(f"\n[device_check] killed after {timeout:.0f} s (its budget)\n")
            return "timed-out", None
    return ("passed" if rc == 0 else "failed"), rc


def _kill(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def capture(cmd: list[str], env: dict | None = None) -> str:
    """stdout of a short command, or "" when it is missing or fails."""
    try:
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def pytest_counts(log_text: str) -> dict:
    """{"passed": n, "failed": n, "skipped": n, ...} from pytest's last summary line."""
    lines = [ln for ln in log_text.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", ln)]
    if not lines:
        return {}
    return {k.rstrip("s") if k.startswith("error") else k: int(n)
            for n, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)",
                                   lines[-1])}


def commit_and_dirty() -> tuple[str, bool | None]:
    """From git where the tree has .git, else from EBJDAT_COMMIT / EBJDAT_DIRTY (the device
    machine gets a copy of the working tree, perhaps without .git: --command fills them in)."""
    commit = capture(["git", "rev-parse", "HEAD"])
    if commit:
        return commit, bool(capture(["git", "status", "--porcelain", "--untracked-files=no"]))
    return (os.environ.get("EBJDAT_COMMIT") or "unknown",
            {"0": False, "1": True}.get(os.environ.get("EBJDAT_DIRTY", "")))


# ----------------------------------------------------------------------------- stages

class Check:
    """One device check: the stages run in order against a shared deadline."""

    def __init__(self, out: Path, smoke: bool, python: str, only: list[str]):
        self.out, self.smoke, self.python, self.only = out, smoke, python, only
        self.work = Path(tempfile.mkdtemp(prefix="ebjdat-device-check-"))
        self.site = self.work / "site"          # carried wheels install here
        self.start = time.monotonic()
        self.deadline = self.start + sum(STAGES[s] for s in only)
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", EBJDAT_CUDA_ARCH=os.environ.get(
            "EBJDAT_CUDA_ARCH", "90-real"))     # sm_90 only: the build takes half the time
        self.env.pop("TRITON_INTERPRET", None)
        self.result = {"mode": "cpu-smoke" if smoke else "gpu", "stages": [], "bench": {},
                       "budget_s": sum(STAGES[s] for s in only)}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def stage(self, name: str, fn) -> None:
        """Run one stage under its budget plus the time earlier stages left unused (the
        budgets of the stages still to come stay reserved); record its status."""
        later = sum(STAGES[s] for s in self.only[self.only.index(name) + 1:])
        budget = self.left() - later
        rec = {"stage": name, "budget_s": STAGES[name], "allowed_s": round(budget, 1)}
        t0 = time.monotonic()
        if budget < STAGES[name] / 2:   # earlier stages ran over (by their kill grace)
            rec.update(status="skipped-for-time", detail=f"{budget:.0f} s left for it")
        else:
            try:
                status, detail = fn(budget)
            except Exception as e:  # a broken stage must not cost the later ones
                status, detail = "failed", f"{type(e).__name__}: {e}"
            rec.update(status=status, detail=detail)
        rec["wall_s"] = round(time.monotonic() - t0, 1)
        self.result["stages"].append(rec)
        print(f"[device_check] {name}: {rec['status']} in {rec['wall_s']} s ({rec.get('detail') or ''})",
              flush=True)

    # -- env
    def env_stage(self, budget):
        commit, dirty = commit_and_dirty()
        smi = capture(["nvidia-smi"])
        query = capture(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,"
                         "clocks.max.sm,clocks.mem", "--format=csv,noheader"])
        versions = capture([self.python, "-c", "import json, torch; d = {'torch': torch.__version__, "
                            "'cuda': torch.version.cuda, 'gpu': torch.cuda.get_device_name() "
                            "if torch.cuda.is_available() else None}\ntry:\n import triton; "
                            "d['triton'] = triton.__version__\nexcept ImportError: d['triton'] = None\n"
                            "print(json.dumps(d))"], self.env)
        env = {"commit": commit, "dirty": dirty, "nvidia_smi": query or None,
               "nvcc": (capture(["nvcc", "--version"]).splitlines() or [None])[-1],
               "python": capture([self.python, "--version"]), **json.loads(versions or "{}")}
        self.result["environment"] = env
        (self.out / "env.txt").write_text(json.dumps(env, indent=1) + "\n\n" + (smi or "nvidia-smi: not found") + "\n")
        self.env.update(EBJDAT_COMMIT=commit, EBJDAT_DIRTY={True: "1", False: "0"}.get(dirty, ""))
        if not self.smoke and not env.get("gpu"):
            return "failed", "torch sees no CUDA GPU"
        return "passed", f"{env.get('gpu') or 'no GPU'}, torch {env.get('torch')}, commit {commit[:8]}"

    # -- build
    def build_stage(self, budget):
        log, deadline = self.out / "build.log", time.monotonic() + budget
        notes = []
        if self.smoke:
            notes.append("editable install skipped (CI installed the package)")
        else:
            status, rc = run_cmd([self.python, "-m", "pip", "install", "-q", "--no-index",
                                  "--no-build-isolation", "--no-deps", "-e", "."],
                                 deadline - time.monotonic(), log, self.env)
            if status != "passed":
                return status, f"pip install -e . exited {rc}: see build.log"
        wheels = sorted(WHEELS.glob("*.whl"))
        if wheels:
            status, rc = run_cmd([self.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                  "--no-compile", "--target", str(self.site), *map(str, wheels)],
                                 deadline - time.monotonic(), log, self.env)
            if status != "passed":
                return status, f"installing the carried wheels exited {rc}: see build.log"
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.site), self.env.get("PYTHONPATH")]))
            notes.append("wheels: " + ", ".join(w.name.split("-")[0] for w in wheels))
        else:
            notes.append("no wheels in .whl/: torchattacks rows will say it is missing")
        need = "['torch', 'cuda']" if self.smoke else "['torch', 'triton', 'cuda']"
        probe = ("from ebjdat import ops; from ebjdat.ops import cuda; b = ops.available_backends(); "
                 f"print('backends', b, 'device code', cuda.has_device_code()); "
                 f"assert all(n in b for n in {need}), b")
        if not self.smoke:
            probe += "; assert cuda.has_device_code(), 'ebjdat._C has no device code'"
        status, rc = run_cmd([self.python, "-c", probe], deadline - time.monotonic(), log, self.env)
        if status != "passed":
            return status, "the built package lacks a backend: see build.log"
        return "passed", "; ".join(notes)

    # -- gpu-tests
    def tests_stage(self, budget):
        log = self.out / "gpu-tests.log"
        cmd = [self.python, "-m", "pytest", "tests", "-m", "gpu", "-p", "no:cacheprovider", "-q", "-rfEs"]
        if not self.smoke and subprocess.run([self.python, "-c", "import xdist"], env=self.env,
                                             capture_output=True).returncode == 0:
            cmd += ["-n", "8"]   # Triton and inductor compiles in parallel workers
        status, rc = run_cmd(cmd, budget, log, self.env)
        counts = pytest_counts(log.read_text())
        self.result["tests"] = {"command": shlex.join(cmd[1:]), "exit_code": rc, **counts}
        if status == "passed" and not counts:
            return "failed", "pytest printed no summary"
        if status == "passed" and self.smoke and counts.get("skipped", 0) == 0:
            return "failed", "no GPU test was collected"
        return status, ", ".join(f"{v} {k}" for k, v in counts.items()) or f"exit {rc}"

    # -- benches
    def bench_stage(self, name, suites, budget, extra=()):
        path = self.work / f"{name}.json"
        dev = ["--device", "cpu", "--quick"] if self.smoke else ["--device", "cuda"]
        cmd = [self.python, "-m", "ebjdat.bench", *suites, *dev, "--json", str(path), *extra]
        status, rc = run_cmd(cmd, budget, self.out / "bench.log", self.env)
        if path.exists():   # written after each suite: a timed-out stage keeps what finished
            self.result["bench"][name] = json.loads(path.read_text())
        rows = self.result["bench"].get(name, {}).get("rows", [])
        return status, f"{len(rows)} rows" + ("" if status == "passed" else f", exit {rc}")

    # -- summary
    def summary_stage(self, budget):
        benches = [b for b in self.result["bench"].values() if b.get("rows")]
        if benches and bench_markdown(benches).startswith("(ebjdat.bench.report unavailable"):
            return "failed", "ebjdat.bench.report did not import: plain list instead"
        return "passed", "device_check.json, summary.md"

    def write(self) -> str:
        """device_check.json and summary.md into the output folder; returns the markdown."""
        self.result["wall_s"] = round(time.monotonic() - self.start, 1)
        md = summary_markdown(self.result)
        (self.out / "summary.md").write_text(md)
        (self.out / "device_check.json").write_text(json.dumps(self.result, indent=1))
        return md

    def run(self) -> int:
        stages = {
            "env": self.env_stage,
            "build": self.build_stage,
            "gpu-tests": self.tests_stage,
            "bench-ops": lambda b: self.bench_stage("bench-ops", ["ops"], b),
            "bench-loops": lambda b: self.bench_stage("bench-loops", ["loops", "overhead", "attack"], b),
            "bench-step": lambda b: self.bench_stage("bench-step", ["step"], b,
                                                     ["--budget-s", f"{max(0.0, b - GRACE_S):.0f}"]),
            "summary": self.summary_stage,
        }
        for name in self.only:
            self.stage(name, stages[name])
        print("\n" + self.write(), flush=True)
        bad = [s["stage"] for s in self.result["stages"] if s["status"] != "passed"]
        return 1 if bad else 0


# ----------------------------------------------------------------------------- summary

def bench_markdown(results: list[dict]) -> str:
    """The bench tables, through ebjdat.bench.report when it imports (else a short list)."""
    try:
        sys.path.insert(0, str(ROOT))
        from ebjdat.bench.report import markdown
        return markdown(results)
    except Exception as e:  # the package itself may be what is broken
        lines = [f"(ebjdat.bench.report unavailable: {type(e).__name__}: {e})"]
        for res in results:
            lines += [f"- {r.get('case')} {r.get('ours')}: {r.get('ours_us')} us" for r in res.get("rows", [])]
        return "\n".join(lines)


def summary_markdown(result: dict) -> str:
    env = result.get("environment", {})
    head = (f"## ebjdat device check ({result['mode']}): {env.get('gpu') or 'no GPU'}, "
            f"{env.get('nvidia_smi') or 'no nvidia-smi'}; torch {env.get('torch')}, CUDA "
            f"{env.get('cuda')}, triton {env.get('triton')}; commit {str(env.get('commit'))[:8]}"
            f"{' (dirty)' if env.get('dirty') else ''}")
    lines = [head, "", "| stage | status | wall s | budget s | detail |", "|---|---|---:|---:|---|"]
    lines += [f"| {s['stage']} | {s['status']} | {s['wall_s']} | {s['budget_s']} | "
              f"{str(s.get('detail') or '').replace('|', '/')} |" for s in result["stages"]]
    benches = [b for b in result["bench"].values() if b.get("rows")]
    if benches:
        lines += ["", bench_markdown(benches)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- entry

def device_command() -> str:
    """The command line to run on the GPU machine (the commit is filled in here: the device
    machine's copy of the tree may not carry .git), and what to carry with it."""
    commit, dirty = commit_and_dirty()
    line = f"EBJDAT_COMMIT={commit} EBJDAT_DIRTY={int(bool(dirty))} bash scripts/device_check.sh"
    if any(WHEELS.glob("*.whl")):
        line += '\ncarry: [".whl"]  (the wheels the device installs)'
    else:
        line += "\nno wheels in .whl/: torchattacks rows will be missing (docs/performance.md: how to fetch)"
    return line


def check_out_dir(path: str | None) -> Path:
    """The output folder, checked before any work: new or empty, never another run's files."""
    if not path:
        raise SystemExit("device_check: no output folder: give --out DIR or set $OUT")
    out = Path(path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SystemExit(f"device_check: {out} is not an empty folder; name a new or empty one")
    out.mkdir(parents=True, exist_ok=True)
    return out


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(STAGES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise SystemExit(f"device_check: unknown stage(s) {unknown}; stages: {', '.join(STAGES)}")
    return [n for n in STAGES if n in names]   # always in the stages' order


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bash scripts/device_check.sh", description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--plan", action="store_true", help="print the stages and budgets; run nothing")
    mode.add_argument("--cpu-smoke", action="store_true", help="every stage's code path on the CPU, tiny sizes")
    mode.add_argument("--command", action="store_true", help="print the command line to run on the GPU machine")
    p.add_argument("--out", default=os.environ.get("OUT"), help="an empty or new folder (default: $OUT)")
    p.add_argument("--only", metavar="S1,S2", help="run only these stages (a rerun)")
    p.add_argument("--python", default=os.environ.get("PYTHON", "python3"), help="the python to use")
    args = p.parse_args(argv)
    only = parse_only(args.only)
    assert sum(STAGES.values()) <= MAX_TOTAL_S
    if args.plan:
        for name in only:
            print(f"stage {name} {STAGES[name]}")
        print(f"total {sum(STAGES[n] for n in only)}")
        return 0
    if args.command:
        print(device_command())
        return 0
    out = check_out_dir(args.out)
    return Check(out, args.cpu_smoke, args.python, only).run()


if __name__ == "__main__":
    sys.exit(main())
