"""The cpu backend (ebjdat._C's vectorised host loops): auto's choice on the CPU, its
Philox normals against the specification's, and the module built without nvcc.

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
m.sgld_step_host(x.data_ptr(), g.data_ptr(), 0, 10, 0, 0, 0.5, 0.0, float('inf'), -1.0, 1.0, 0, 0, 0)
assert (x == 0.5).all(), x
try:
    m.sgld_step(x.data_ptr(), g.data_ptr(), 0, 10, 0, 0, 0.5, 0.0, 1.0, -1.0, 1.0, 0, 0, 0, 0, 0)
except RuntimeError as e:
    assert "without device code" in str(e)
else:
    raise AssertionError("a launch without device code must fail")
print("ok", m.cpu_simd_level())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr
