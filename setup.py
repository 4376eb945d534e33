"""Builds the optional CUDA extension ``ebjdat._C`` with CMake + ninja (metadata: pyproject.toml).

``pip install [-e] .`` configures CMakeLists.txt with pybind11's CMake package and builds
the module next to the package sources (editable) or into the wheel. Where nvcc is found
(PATH, $CUDA_HOME/bin, /usr/local/cuda/bin) and EBJDAT_NO_CUDA is not "1", the module
carries the CUDA kernels and the host loops (backends cuda and cpu); otherwise, where a C++
compiler is found, the host loops alone (backend cpu); with no compiler at all the package
installs as pure Python, and ``ebjdat info`` says why.

Environment:
  EBJDAT_NO_CUDA=1       build without nvcc (C++ only: the cpu backend)
  EBJDAT_NO_EXT=1        skip the extension (pure Python)
  EBJDAT_CUDA_ARCH=...   CMAKE_CUDA_ARCHITECTURES (default "90-real;75-virtual": sm_90
                         machine code plus compute_75 PTX that newer GPUs JIT)
  CUDA_HOME              where to look for bin/nvcc when it is not on PATH
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
DEFAULT_CUDA_ARCH = "90-real;75-virtual"


def find_nvcc() -> str | None:
    """Path of nvcc, or None when there is none (or EBJDAT_NO_CUDA=1)."""
    if os.environ.get("EBJDAT_NO_CUDA") == "1":
        return None
    candidates = [shutil.which("nvcc")]
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home:
        candidates.append(os.path.join(cuda_home, "bin", "nvcc"))
    candidates.append("/usr/local/cuda/bin/nvcc")
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def find_cxx() -> str | None:
    """Path of a C++ compiler ($CXX, c++, g++, clang++), or None (or EBJDAT_NO_EXT=1)."""
    if os.environ.get("EBJDAT_NO_EXT") == "1":
        return None
    for c in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        exe = c and shutil.which(c)
        if exe:
            return exe
    return None


def _tool(name: str) -> str:
    """The cmake / ninja executable: the PyPI package's (a build requirement), else PATH."""
    try:
        mod = __import__(name)
        exe = os.path.join(mod.CMAKE_BIN_DIR if name == "cmake" else mod.BIN_DIR, name)
        if os.path.isfile(exe):
            return exe
    except (ImportError, AttributeError):
        pass
    exe = shutil.which(name)
    if exe is None:
        raise RuntimeError(f"building ebjdat._C needs {name}: pip install {name}")
    return exe


class CMakeExtension(Extension):
    """An extension whose sources CMakeLists.txt lists (csrc/*.cpp, kernels/*.cu)."""

    def __init__(self, name: str, nvcc: str | None):
        super().__init__(name, sources=[])
        self.nvcc = nvcc


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        if not isinstance(ext, CMakeExtension):
            return super().build_extension(ext)
        import pybind11

        # get_ext_fullpath: the package dir for in-place / editable builds, build_lib otherwise
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        arch = os.environ.get("EBJDAT_CUDA_ARCH", DEFAULT_CUDA_ARCH)
        configure = [
            _tool("cmake"), "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja",
            f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        ]
        if ext.nvcc:
            configure += ["-DEBJDAT_CUDA=ON", f"-DCMAKE_CUDA_COMPILER={ext.nvcc}",
                          f"-DCMAKE_CUDA_ARCHITECTURES={arch}"]
            print(f"ebjdat: building ebjdat._C with {ext.nvcc} for CUDA architectures {arch}")
        else:
            configure += ["-DEBJDAT_CUDA=OFF"]
            print("ebjdat: building ebjdat._C without nvcc: host loops only (the cpu backend)")
        jobs = str(os.cpu_count() or 1)
        subprocess.run(configure, check=True)
        subprocess.run([_tool("cmake"), "--build", str(build_dir), "-j", jobs], check=True)


def _remove_stale_inplace_build() -> None:
    """A pure-Python install must not pick up an extension left by an earlier editable build."""
    for so in (ROOT / "ebjdat").glob("_C.*"):
        if so.suffix in (".so", ".pyd"):
            so.unlink()
            print(f"ebjdat: removed stale {so.relative_to(ROOT)}", file=sys.stderr)


NVCC = find_nvcc()
CXX = find_cxx()
if CXX is None:
    why = "EBJDAT_NO_EXT=1" if os.environ.get("EBJDAT_NO_EXT") == "1" else "no C++ compiler found"
    print(f"ebjdat: {why}: skipping the extension ebjdat._C; installing pure Python "
          "(backends torch and triton only)", file=sys.stderr)
    _remove_stale_inplace_build()
elif NVCC is None:
    why = "EBJDAT_NO_CUDA=1" if os.environ.get("EBJDAT_NO_CUDA") == "1" else "nvcc not found"
    print(f"ebjdat: {why}: building ebjdat._C without CUDA kernels (backend cpu, not cuda)",
          file=sys.stderr)

setup(
    ext_modules=[CMakeExtension("ebjdat._C", NVCC)] if CXX else [],
    cmdclass={"build_ext": CMakeBuild},
)
