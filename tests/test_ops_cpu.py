"""The cpu backend (ebjdat._C's vectorised host loops): auto's choice on the CPU, its
Philox normals against the specification's, its threads, and the module built without nvcc.

Its results against the specification, for every op, dtype and layout, are the op tests'
(tests/test_ops_*.py run every backend of conftest.BACKENDS)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ebjdat import ops
from ebjdat.ops import backends, cuda, philox

from .conftest import require_backend

ROOT = Path(__file__).resolve().parents[1]


def test_auto_picks_cpu_for_cpu_tensors():
    require_backend("cpu")
    name, why = backends.auto_choice("cpu")
    assert name == "cpu" and cuda.cpu_simd_level() in why
    assert backends._decide("auto", torch.zeros(3)).name == "cpu"
    assert cuda.cpu_simd_level() in ("avx512", "avx2", "baseline")


def test_auto_falls_back_to_torch_and_says_why(monkeypatch):
    monkeypatch.setattr(cuda, "load_error", lambda: "the extension ebjdat._C is not built")
    assert backends.auto_choice("cpu") == ("torch", "the extension ebjdat._C is not built")
    assert "cpu" not in ops.available_backends()
    with pytest.warns(RuntimeWarning, match="torch specification on the CPU.*ebjdat._C is not built"):
        assert backends._decide("auto", torch.zeros(3)).name == "torch"
    with pytest.raises(RuntimeError, match="backend 'cpu' is not available"):
        ops.set_backend("cpu")


def test_info_says_what_auto_picks(capsys):
    from ebjdat import cli
    assert cli.main(["info"]) == 0
    name, why = backends.auto_choice("cpu")
    assert f"auto on CPU tensors: {name} ({why})" in capsys.readouterr().out


def test_cpu_backend_refuses_other_devices():
    require_backend("cpu")
    with pytest.raises(ValueError, match="cpu backend runs CPU tensors only"):
        ops.check_backend("cpu", "cuda")
    with pytest.raises(RuntimeError, match="cpu backend runs CPU tensors only"):
        backends._decide("cpu", torch.zeros(3, device="meta"))


@pytest.mark.parametrize("seed,offset", [(1234, 77), (-5, 2**32 - 3), (2**63 - 1, 2**40 + 5)])
def test_vectorised_normals_match_the_specification(seed, offset):
    """Blocks of counters (with a tail, across a 32-bit counter carry) against philox.normals."""
    require_backend("cpu")
    nq = 3 * 64 + 13
    z = np.frombuffer(cuda.extension().cpu_normals_host(seed % 2**64, offset, 5, nq), dtype=np.float32)
    state = torch.tensor([seed, offset + 5, 0], dtype=torch.int64)
    ref = philox.normals(state, 4 * nq)
    torch.testing.assert_close(torch.from_numpy(z.copy()), ref, atol=philox.NOISE_ATOL, rtol=0)


def test_cpu_backend_uses_torch_layouts_without_copies_of_dense_inputs():
    """Noisy sgld on a (256, 2) tensor, channels_last and a transposed view: the same as torch."""
    require_backend("cpu")
    for x0 in (torch.rand(256, 2), torch.rand(5, 3, 4, 6).to(memory_format=torch.channels_last),
               torch.rand(9, 11).t()):
        g = torch.randn_like(x0)
        out = {}
        for be in ("torch", "cpu"):
            x = x0.clone()
            with ops.use_backend(be):
                ops.sgld_step_(x, g, step_size=0.1, noise_std=0.5, generator=ops.PhiloxGenerator(7))
            out[be] = x
        torch.testing.assert_close(out["cpu"], out["torch"], atol=0.5 * philox.NOISE_ATOL * 4, rtol=1e-6)


def test_builds_and_runs_without_nvcc(tmp_path):
    """setup.py with EBJDAT_NO_CUDA=1 (as where nvcc is absent) builds the C++-only module;
    it runs the host loops and reports no device code."""
    env = dict(os.environ, EBJDAT_NO_CUDA="1", PATH=os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "nvcc").exists()))
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(tmp_path / "lib"),
                    "--build-temp", str(tmp_path / "tmp")], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=900)
    (so,) = (tmp_path / "lib" / "ebjdat").glob("_C.*")
    assert not list((tmp_path / "tmp").rglob("*.cu.o"))
    code = f"""
import importlib.util, torch
spec = importlib.util.spec_from_file_location("ebjdat._C", {str(so)!r})
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
assert not m.has_device_code()
x = torch.zeros(10); g = torch.ones(10)
m.sgld_step_host(x.data_ptr(), g.data_ptr(), 0, 10, 10, 0, 0, 0, 0.5, 0.0, float('inf'), -1.0, 1.0, 0, 0, 0, 1)
assert (x == 0.5).all(), x
try:
    m.sgld_step(x.data_ptr(), g.data_ptr(), 0, 10, 10, 0, 0, 0, 0.5, 0.0, 1.0, -1.0, 1.0, 0, 0, 0, 0, 0)
except RuntimeError as e:
    assert "without device code" in str(e)
else:
    raise AssertionError("a launch without device code must fail")
print("ok", m.cpu_simd_level())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr


def _threaded_ops(backend: str, threads: int, layout: str) -> list[torch.Tensor]:
    """Every host loop that threads, on (12, 3, 48, 40) fp32 tensors (69,120 elements: above
    the pool's 2**16 threshold), run with `threads` torch threads; returns the outputs."""
    g = torch.Generator().manual_seed(3)
    shape = (12, 3, 48, 40)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x0, grad, xo = (torch.rand(shape, generator=g).contiguous(memory_format=fmt) for _ in range(3))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with ops.use_backend(backend):
            outs = []
            x = x0.clone()
            ops.sgld_step_(x, grad, step_size=0.5, noise_std=0.01, clamp=(0.0, 1.0),
                           generator=ops.PhiloxGenerator(7))
            outs.append(x)
            x = x0.clone()
            ops.sgld_step_(x, grad, step_size=0.5, grad_clip=0.3)
            outs.append(x)
            for norm in ("linf", "l2"):
                x = x0.clone()
                ops.pgd_step_(x, grad - 0.5, xo, alpha=0.05, eps=0.1, norm=norm)
                outs.append(x)
                x = x0.clone()
                ops.pgd_init_(x, xo, eps=0.1, norm=norm, generator=ops.PhiloxGenerator(9))
                outs.append(x)
            prop = torch.empty_like(x0)
            ops.mala_propose_(prop, x0, grad, step_size=0.01, generator=ops.PhiloxGenerator(11))
            outs.append(prop)
    finally:
        torch.set_num_threads(before)
    return outs


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_threaded_loops_match_one_thread_and_the_specification(layout):
    """The host loops split whole blocks (or samples) over threads: 3 threads give the
    one-thread result bit for bit, and both match the specification (noise within
    NOISE_ATOL, the l2 sums within float rounding). The pool really started workers."""
    require_backend("cpu")
    one = _threaded_ops("cpu", 1, layout)
    three = _threaded_ops("cpu", 3, layout)
    assert cuda.extension().cpu_pool_workers() >= 2
    spec = _threaded_ops("torch", 1, layout)
    for a, b, want in zip(one, three, spec):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, want, rtol=1e-5, atol=philox.NOISE_ATOL)


def test_pool_works_in_a_forked_child():
    """A forked child (a DataLoader worker) has none of the parent's pool threads: it
    starts its own instead of waiting on workers that did not survive the fork. (The child
    reads x with numpy: torch's own OpenMP regions do not survive a fork either.)"""
    require_backend("cpu")
    _threaded_ops("cpu", 2, "contiguous")                 # the parent's pool exists
    code = """
import os, sys, faulthandler, torch
from ebjdat import ops
torch.set_num_threads(2)
x = torch.zeros(1 << 17); g = torch.ones(1 << 17)
ops.sgld_step_(x, g, step_size=0.5)                       # parent: pool started
pid = os.fork()
if pid == 0:
    faulthandler.dump_traceback_later(60, exit=True)
    ops.sgld_step_(x, g, step_size=0.5)
    os._exit(0 if (x.numpy() == 1.0).all() else 1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_threaded_loops_from_several_python_threads():
    """Calls from several Python threads at once (the GIL is released in the loops) take
    turns on the pool and give each call's own result."""
    import threading
    require_backend("cpu")
    n = 1 << 17
    grads = [torch.randn(n, generator=torch.Generator().manual_seed(i)) for i in range(4)]

    def run(i, out):
        x = torch.zeros(n)
        gen = ops.PhiloxGenerator(100 + i)
        for _ in range(5):
            ops.sgld_step_(x, grads[i], step_size=0.1, noise_std=0.01, generator=gen)
        out[i] = x

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with ops.use_backend("cpu"):
            serial, together = {}, {}
            for i in range(4):
                run(i, serial)
            workers = [threading.Thread(target=run, args=(i, together)) for i in range(4)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(timeout=120)
    finally:
        torch.set_num_threads(before)
    assert not any(w.is_alive() for w in workers)
    for i in range(4):
        assert torch.equal(serial[i], together[i])
