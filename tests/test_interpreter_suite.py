"""The interpreter tests on machines with a GPU (one child pytest process), and the
selection logic of selection.py, checked on the CPU by playing a GPU machine."""
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from . import selection
from .conftest import CHILD_ITEMS

ROOT = Path(__file__).resolve().parent.parent


def _pytest(args, env):
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True)


def _counts(output: str) -> dict:
    """{"passed": n, "deselected": n, ...} from pytest's closing line."""
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?)",
                                             output.strip().splitlines()[-1])}


def test_interpreter_tests_in_child_process(request):
    """Selected only on a GPU machine without the interpreter (selection.plan): the tests
    marked ``interpreter`` run in a child process with TRITON_INTERPRET=1 and no GPU
    visible, so that it behaves as a CPU machine; every one of them must pass."""
    ids = request.config.stash[CHILD_ITEMS]
    assert ids, "this test runs only when interpreter tests were moved out of this process"
    env = {k: v for k, v in os.environ.items() if k != selection.SIMULATE_GPU_MACHINE}
    env.update(TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    proc = _pytest(["-q", "-rfE", *ids], env)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, f"interpreter tests failed in the child process:\n{tail}"
    assert _counts(proc.stdout) == {"passed": len(ids)}, tail
    print(proc.stdout.strip().splitlines()[-1])


def _item(name, interpreter=False):
    marks = {"interpreter": object()} if interpreter else {}
    return SimpleNamespace(name=name, originalname=name.split("[")[0],
                           get_closest_marker=marks.get)


def test_plan_moves_interpreter_tests_only_on_gpu_machines():
    tri, cpu, proxy = _item("t[triton]", True), _item("t[cuda]"), _item(selection.PROXY)
    items = [tri, cpu, proxy]
    assert selection.plan(items, gpu_machine=False, interpreting=True) == ([tri, cpu], [], [proxy])
    assert selection.plan(items, gpu_machine=True, interpreting=True) == ([tri, cpu], [], [proxy])
    assert selection.plan(items, gpu_machine=True, interpreting=False) == ([cpu, proxy], [tri], [])
    # nothing to move (e.g. -m gpu): the child-process test is deselected, not run empty
    assert selection.plan([cpu, proxy], gpu_machine=True, interpreting=False) == ([cpu], [], [proxy])
    # the child-process test deselected by -k: the moved tests are still reported as moved
    assert selection.plan([tri, cpu], gpu_machine=True, interpreting=False) == ([cpu], [tri], [])


def test_triton_parametrised_tests_are_marked_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = _pytest(["--collect-only", "-q", "-m", "interpreter", "tests/test_ops_noise.py",
                    "tests/test_ops_gpu.py"], env)
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    assert ids == ["tests/test_ops_noise.py::test_noise_identical_across_backends[triton]"], proc.stdout


def test_simulated_gpu_machine_runs_interpreter_tests_in_a_child():
    """A GPU machine played on the CPU: TRITON_INTERPRET unset, so the triton case of a test
    leaves this process and runs (and passes) in the child; the cuda case stays here."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env[selection.SIMULATE_GPU_MACHINE] = "1"
    proc = _pytest(["-v", "tests/test_ops_noise.py::test_noise_identical_across_backends",
                    f"tests/test_interpreter_suite.py::{selection.PROXY}"], env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "test_noise_identical_across_backends[cuda] PASSED" in out, out[-4000:]
    assert f"{selection.PROXY} PASSED" in out, out[-4000:]
    assert "[triton] PASSED" not in out    # it ran in the child, not here
    assert _counts(proc.stdout) == {"passed": 2, "deselected": 1}, out[-4000:]


def test_cpu_machine_deselects_the_child_process_test():
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop(selection.SIMULATE_GPU_MACHINE, None)
    proc = _pytest(["--collect-only", "-q", "tests/test_interpreter_suite.py"], env)
    assert selection.PROXY not in proc.stdout and "1 deselected" in proc.stdout, proc.stdout
