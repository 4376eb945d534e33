"""kernels/philox.cuh's uniform01 and log_unit over every one of their 2**23 inputs.

The CUDA kernels and their host loops share these functions (fmaf throughout, so host and
device agree bit for bit); here the host build is checked exhaustively against double
precision: uniform01 must be exact, log_unit within 1e-7 relative, and the Box-Muller
radius sqrt(-2 ln u) it feeds within 2e-7 (ebjdat.ops.philox.NOISE_ATOL is 1e-5).
"""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROGRAM = r"""
#include <cstdio>
#include "philox.cuh"
int main() {
  double rel = 0, radius = 0; long inexact = 0;
  for (uint32_t k = 0; k < (1u << 23); ++k) {
    const float u = ebjdat::uniform01(k << 9 | 0x1FFu);  // the low 9 bits must not matter
    const double exact = ((double)k + 0.5) * 1.1920928955078125e-07;
    inexact += (double)u != exact;
    const double ln = log(exact), got = ebjdat::log_unit(u);
    rel = fmax(rel, fabs(got - ln) / fabs(ln));
    radius = fmax(radius, fabs(sqrt(-2 * got) - sqrt(-2 * ln)));
  }
  printf("%ld %.6g %.6g\n", inexact, rel, radius);
}
"""


def test_uniform01_exact_and_log_unit_accurate_on_every_input(tmp_path):
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.fail("no C++ compiler (c++ or g++) on PATH: the extension's build needs one too")
    src, exe = tmp_path / "log_unit.cpp", tmp_path / "log_unit"
    src.write_text(PROGRAM)
    subprocess.run([cxx, "-O2", "-std=c++17", "-ffp-contract=off", "-I", str(ROOT / "kernels"),
                    str(src), "-o", str(exe), "-lm"], check=True, capture_output=True, timeout=120)
    inexact, rel, radius = subprocess.run([str(exe)], check=True, capture_output=True, text=True,
                                          timeout=120).stdout.split()
    assert int(inexact) == 0
    assert float(rel) < 1e-7, rel
    assert float(radius) < 2e-7, radius
