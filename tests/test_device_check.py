"""scripts/device_check.sh on the CPU: the plan, the output-folder check, stage budgets
(kill at the budget, skipped-for-time) and a smoke run of some stages. CI runs the whole
``--cpu-smoke`` besides."""
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "device_check.sh"
spec = importlib.util.spec_from_file_location("device_check", ROOT / "scripts" / "device_check.py")
dc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dc)
STAGE_NAMES = ["env", "build", "gpu-tests", "bench-ops", "bench-loops", "bench-step", "summary"]


def _sh(*args, **env):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def test_plan_names_every_stage_within_nine_minutes():
    proc = _sh("--plan")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")[:-1]
    stages = [line.split() for line in lines[:-1]]
    assert [s[1] for s in stages] == STAGE_NAMES and all(s[0] == "stage" for s in stages)
    total = lines[-1].split()
    assert total[0] == "total" and int(total[1]) == sum(int(s[2]) for s in stages) <= 540


def test_output_folder_and_stages_are_checked_before_work(tmp_path):
    (tmp_path / "old.json").write_text("another run")
    proc = _sh("--cpu-smoke", "--out", str(tmp_path))
    assert proc.returncode != 0 and "not an empty folder" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]
    proc = _sh("--cpu-smoke", "--out", str(tmp_path / "new"), "--only", "env,bench-nope")
    assert proc.returncode != 0 and "unknown stage" in proc.stderr
    proc = _sh("--cpu-smoke", "--out", "", OUT="")
    assert proc.returncode != 0 and "no output folder" in proc.stderr


def test_command_fills_in_the_commit():
    out = _sh("--command").stdout
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert out.startswith(f"EBJDAT_COMMIT={commit} EBJDAT_DIRTY=") and "scripts/device_check.sh" in out


def test_a_stage_is_killed_at_its_budget(tmp_path):
    status, rc = dc.run_cmd([sys.executable, "-c", "import time; time.sleep(60)"], 1.0,
                            tmp_path / "log", dict(os.environ))
    assert (status, rc) == ("timed-out", None)
    assert "killed after 1 s" in (tmp_path / "log").read_text()
    assert dc.run_cmd([sys.executable, "-c", "raise SystemExit(3)"], 30, tmp_path / "log",
                      dict(os.environ)) == ("failed", 3)


def test_stage_budgets_and_skipped_for_time(tmp_path):
    check = dc.Check(tmp_path, True, sys.executable, ["bench-ops", "summary"])
    seen = {}
    check.stage("bench-ops", lambda budget: seen.setdefault("budget", budget) and ("passed", "ok"))
    assert dc.STAGES["bench-ops"] - 1 < seen["budget"] <= dc.STAGES["bench-ops"]  # summary's kept
    check.deadline = time.monotonic() + dc.STAGES["summary"] / 4     # earlier stages ran over
    check.stage("summary", lambda budget: pytest.fail("must not run"))
    assert [s["status"] for s in check.result["stages"]] == ["passed", "skipped-for-time"]
    check.stage("bench-ops", lambda budget: 1 / 0)
    assert check.result["stages"][-1]["status"] in ("failed", "skipped-for-time")


def test_pytest_counts():
    log = "....\n== 3 failed, 1551 passed, 117 skipped, 636 deselected, 2 errors in 9.1s ==\n"
    assert dc.pytest_counts(log) == {"failed": 3, "passed": 1551, "skipped": 117,
                                     "deselected": 636, "error": 2}
    assert dc.pytest_counts("no summary") == {}


def test_cpu_smoke_of_env_tests_and_summary(tmp_path):
    out = tmp_path / "out"
    proc = _sh("--cpu-smoke", "--out", str(out), "--only", "env,gpu-tests,summary")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.rstrip().splitlines()                 # the markdown table is last
    assert lines[-1].startswith("| summary | passed |") and lines[-5].startswith("| stage | status |")
    files = sorted(p.name for p in out.iterdir())
    assert files == ["device_check.json", "env.txt", "gpu-tests.log", "summary.md"]
    data = json.loads((out / "device_check.json").read_text())
    assert data["mode"] == "cpu-smoke"
    assert [(s["stage"], s["status"]) for s in data["stages"]] == \
        [("env", "passed"), ("gpu-tests", "passed"), ("summary", "passed")]
    assert data["tests"]["skipped"] > 50 and data["tests"].get("failed", 0) == 0
    assert len(data["environment"]["commit"]) == 40 and data["environment"]["torch"]
