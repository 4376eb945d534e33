"""Which tests run in which pytest process (used by conftest.py; no test imports it).

Triton reads ``TRITON_INTERPRET`` when its kernels are defined, so one process runs the
Triton kernels either in the interpreter (CPU tensors) or compiled (CUDA tensors), never
both. Tests marked ``interpreter`` run the triton backend on CPU tensors:

* on a machine without a GPU, conftest.py sets ``TRITON_INTERPRET=1`` and every test runs
  in this process;
* on a machine with a GPU (and ``TRITON_INTERPRET`` unset) the Triton kernels compile for
  the GPU here, so the interpreter tests are taken out of this process and run in a child
  pytest process with ``TRITON_INTERPRET=1`` and the GPU hidden, by the single test
  ``test_interpreter_suite.py::test_interpreter_tests_in_child_process``.
"""
from __future__ import annotations

import os

PROXY = "test_interpreter_tests_in_child_process"
# The interpreter sweeps (every dtype, shape and layout of every op through Triton's
# interpreter, several minutes on 2 cores) are marked ``slow``: the default run
# (pyproject's ``-m "not slow"``) leaves them out, CI runs them with ``pytest -m slow``.
INTERPRETER_SWEEPS = ("test_ops_pgd.py", "test_ops_sgld.py", "test_mala.py")
# set by tests that play a GPU machine on the CPU (test_interpreter_suite.py)
SIMULATE_GPU_MACHINE = "EBJDAT_TEST_SIMULATE_GPU_MACHINE"


def interpreting(environ=os.environ) -> bool:
    return environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def gpu_machine(has_gpu: bool, environ=os.environ) -> bool:
    return has_gpu or environ.get(SIMULATE_GPU_MACHINE) == "1"


def is_sweep(item) -> bool:
    """An interpreter test of one of INTERPRETER_SWEEPS' files."""
    return needs_interpreter(item) and getattr(item, "fspath", None) is not None and \
        item.fspath.basename in INTERPRETER_SWEEPS


def needs_interpreter(item) -> bool:
    """Runs the triton backend on CPU tensors: marked ``interpreter`` (conftest.py marks
    every test parametrised with backend="triton" that is not marked ``gpu``)."""
    return item.get_closest_marker("interpreter") is not None


def is_proxy(item) -> bool:
    return getattr(item, "originalname", item.name) == PROXY


def plan(items, *, gpu_machine: bool, interpreting: bool):
    """(run here, run in the child process, deselect) for the collected ``items``.

    The child-process test runs only where interpreter tests were selected on a GPU
    machine without the interpreter; elsewhere it is deselected, never skipped.
    """
    tests = [i for i in items if not is_proxy(i)]
    proxies = [i for i in items if is_proxy(i)]
    if gpu_machine and not interpreting:
        child = [i for i in tests if needs_interpreter(i)]
        here = [i for i in tests if not needs_interpreter(i)]
        if child and proxies:
            return here + proxies, child, []
        return here, child, proxies
    return tests, [], proxies
