"""Registers, spills and SASS of every kernel variant the ops launch, compiled without a GPU.

``python -m ebjdat.bench.compile_report --arch 90 --json F [--markdown M] [--backend B]
[--only REGEX]``

* Triton: the library's own host code (each registered op's function in its family's
  ``triton.py``, called as ``ops/library.py`` calls it, at every variant the op's registry
  record lists: ``registry.Op.variants``) is run on meta tensors under a fake driver that
  reports an sm_<arch> GPU; ``knobs.runtime.jit_cache_hook`` records each launch's
  specialisation (pointer/int divisibility, int32 vs int64, constexpr flags) and stops it
  before Triton compiles or launches anything. Each distinct specialisation is
  then compiled with ``triton.compile``. Registers, stack frame and spills come from
  re-running Triton's bundled ptxas on the kernel's PTX with the flags Triton uses
  (``-lineinfo -v --regAllocOptLevel=2 [--fmad=false] --gpu-name=sm_90a``); the count is
  checked against ``cuobjdump -res-usage`` of Triton's own cubin, so a drift in those
  flags shows as a failed variant instead of a wrong number.
* CUDA: ``kernels/*.cu`` compiled by nvcc to cubins with CMakeLists.txt's Release flags
  plus ``-Xptxas -v``; one entry per ``__global__`` instantiation, named by c++filt, its
  family from the op it belongs to (``registry.Op.cuda_flags`` names its boolean template
  flags).

SASS (``cuobjdump -sass``): ``sass_instructions`` counts the instructions of a function
except NOPs and the ``BRA`` to its own address that ends the code (alignment padding, never
executed); ``vector_loads`` says whether a 128-bit global load (``LDG.E.128``, any
suffix) is present. ``elements_per_thread`` is what one thread handles in one pass of the
kernel's main loop, so ``sass_instructions / elements_per_thread`` compares kernels.
``hot_instructions`` counts the smallest loop holding a 128-bit load (``hot_loop``): the
CUDA elementwise kernels run whole aligned chunks in a loop of their own, so this is what a
thread executes per pass in the bulk of a large tensor.
Exit status 1 when a variant failed to compile or spills.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Must agree with CMakeLists.txt (Release build, CUDA standard 17, EBJDAT_DEVICE_CODE=1,
# the kernels/ and csrc/ include dirs, --fmad=false -Xcompiler=-ffp-contract=off).
NVCC_FLAGS = ["-O3", "-DNDEBUG", "-std=c++17", "--fmad=false", "-Xcompiler=-ffp-contract=off",
              "-DEBJDAT_DEVICE_CODE=1", "-I", str(ROOT / "kernels"), "-I", str(ROOT / "csrc")]
BIG_SHAPE = (2**31 // 3072 + 1, 3, 32, 32)  # numel > 2**31: the launch code picks int64 indices
SHAPES = {"cifar": (64, 3, 32, 32), "odd": (7, 3, 17, 19), "big": BIG_SHAPE}
# (x, grad) dtypes: grad may be any float dtype; fp32 grads of 16-bit x are the mixed case
# met in practice (fp32 master gradients), the other mixes are left out.
PAIRS = [("fp32", "fp32"), ("fp16", "fp16"), ("bf16", "bf16"), ("fp64", "fp64"),
         ("bf16", "fp32"), ("fp16", "fp32")]


def entry(backend, kernel, variant, family, **fields) -> dict:
    """One variant's record; the measurements stay None unless given."""
    out = dict(backend=backend, kernel=kernel, variant=variant, family=family, ok=True, error=None,
               registers=None, spill_bytes=None, stack_bytes=None, vector_loads=None,
               sass_instructions=None, hot_instructions=None, elements_per_thread=None)
    out.update(fields)
    return out


# ----------------------------------------------------------------------------- parsers

def parse_ptxas_log(text: str) -> dict[str, dict]:
    """Per entry function of a ``ptxas -v`` log: registers, stack_bytes, spill_bytes."""
    out, props, entry_name, prop_name = {}, {}, None, None
    for line in text.splitlines():
        if m := re.search(r"Compiling entry function '([^']+)'", line):
            entry_name = m.group(1)
        elif m := re.search(r"Function properties for (\S+)", line):
            prop_name = m.group(1)
        elif m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line):
            props[prop_name] = dict(stack_bytes=int(m.group(1)), spill_bytes=int(m.group(2)) + int(m.group(3)))
        elif (m := re.search(r"Used (\d+) registers", line)) and entry_name:
            # the properties line of a called (non-entry) function is not the kernel's
            out[entry_name] = dict(registers=int(m.group(1)),
                                   **props.get(entry_name, dict(stack_bytes=0, spill_bytes=0)))
    return out


def parse_res_usage(text: str) -> dict[str, int]:
    """Registers per function from ``cuobjdump -res-usage`` (``Function NAME:`` + ``REG:n``)."""
    return {k: int(v) for k, v in re.findall(r"^\s*Function (\S+):\s*\n\s*REG:(\d+)", text, re.M)}


def parse_sass(text: str) -> dict[str, dict]:
    """Per function of ``cuobjdump -sass``: sass_instructions (no NOPs, no final self-BRA),
    vector_loads (a 128-bit global load is present) and hot_instructions (``hot_loop``)."""
    out, name, code = {}, None, {}
    for line in text.splitlines():
        if m := re.match(r"\s*Function : (\S+)", line):
            name = m.group(1)
            out[name] = dict(sass_instructions=0, vector_loads=False)
            code[name] = []
        elif name and (m := re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([\w.]+)\s*([^;]*);", line)):
            addr, op, args = int(m.group(1), 16), m.group(2), m.group(3).strip()
            if op == "NOP" or (op == "BRA" and args.startswith("0x") and int(args, 16) == addr):
                continue
            out[name]["sass_instructions"] += 1
            code[name].append((addr, op, args))
            if _vector_load(op):
                out[name]["vector_loads"] = True
    for name, instructions in code.items():
        out[name]["hot_instructions"] = hot_loop(instructions)
    return out


def _vector_load(op: str) -> bool:
    return op.startswith("LDG") and "128" in op.split(".")


def hot_loop(instructions: list[tuple[int, str, str]]) -> int:
    """Instructions in the smallest loop (a backward branch and its target, inclusive)
    that holds a 128-bit global load: the steady-state body of a kernel whose whole,
    aligned chunks run in a loop of their own, i.e. what a thread executes per pass in the
    bulk of a large tensor (rarely taken branches inside it count as executed). A kernel
    with no such loop (straight-line, or scalar loads only) counts all its instructions."""
    best = None
    for addr, op, args in instructions:
        if op != "BRA" or not args.startswith("0x") or int(args, 16) >= addr:
            continue
        body = [o for a, o, _ in instructions if int(args, 16) <= a <= addr]
        if any(_vector_load(o) for o in body) and (best is None or len(body) < best):
            best = len(body)
    return best if best is not None else len(instructions)


# ----------------------------------------------------------------------------- tools

def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


def _version(cmd) -> str | None:
    """X.Y.Z of a CUDA tool's ``--version`` (None when it cannot run)."""
    try:
        m = re.search(r"V(\d+\.\d+\.\d+)", _run([cmd, "--version"]).stdout)
    except OSError:
        return None
    return m.group(1) if m else None


def cuobjdump_path() -> str | None:
    """Triton's bundled cuobjdump (this machine has no system one), else the PATH's."""
    try:
        from triton import knobs
        return knobs.nvidia.cuobjdump.path
    except Exception:  # no triton, or no NVIDIA backend in it
        return shutil.which("cuobjdump")


def nvcc_path() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    found = shutil.which("nvcc") or str(Path(home, "bin", "nvcc"))
    return found if os.access(found, os.X_OK) else None


def inspect_cubin(cubin: Path) -> tuple[dict, dict]:
    """(parse_sass, parse_res_usage) of a cubin, from one cuobjdump run."""
    res = _run([cuobjdump_path(), "-res-usage", "-sass", cubin], check=True).stdout
    return parse_sass(res), parse_res_usage(res)


# ----------------------------------------------------------------------------- triton

def triton_cases(only: str | None = None):
    """(name, family, op, args) of every launch the library makes, per ``ops/library.py``:
    op(x, *others, *scalars, layout), with layout None or (C, H, W) for channels_last; for
    each registered op, shape, (x, grad) dtype pair (x's dtype alone for an op without a
    tensor of any dtype) and variant of ``registry.Op.variants``."""
    import torch

    from ebjdat.ops import registry
    dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}
    state = torch.zeros(3, dtype=torch.int64, device="meta")

    def meta(shape, dtype, fill):  # meta tensors: no memory, data_ptr() 0 like an aligned allocation
        return torch.empty(shape, dtype=dtype, device="meta")

    cases = []
    for op in registry.ops():
        any_dtype = any(isinstance(a, registry.Like) and not a.same_dtype for a in op.args)
        for tag, shape in SHAPES.items():
            numel, d_numel = shape[0] * shape[1] * shape[2] * shape[3], shape[1] * shape[2] * shape[3]
            n = "BIG" if tag == "big" else f"n%16{'=' if numel % 16 == 0 else '!='}0"
            d = "BIG" if tag == "big" else f"D%16{'=' if d_numel % 16 == 0 else '!='}0"  # per-sample kernels
            for xd, gd in PAIRS:
                if xd != gd and not any_dtype:
                    continue  # no tensor of another dtype than x
                ty = xd if xd == gd else f"{xd}/g={gd}"
                tensors = op.make_tensors(shape, dt[xd], meta, grad_dtype=dt[gd])
                for v in op.variants:
                    args = op.lower(tensors, v.kwargs, state)
                    words = " ".join(w for w in (v.prefix, ty, v.suffix) if w)
                    for lay in ((None, tuple(shape[1:])) if v.layouts else (None,)):
                        name = f"{op.name} {words}{' channels_last' if lay else ''} {d if v.per_sample else n}"
                        cases.append((name, v.family, op, (*args, lay)))
    return [c for c in cases if only is None or re.search(only, c[0])]


def capture_triton(arch: int, cases) -> list[tuple]:
    """Run each case's launch code under a fake sm_<arch> driver; returns the distinct
    (name, family, kernel name, jit_fn, compile_kwargs). Nothing is compiled or launched here."""
    import torch
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.runtime.driver import driver

    from ebjdat.ops import backends

    target = GPUTarget("cuda", arch, 32)

    class FakeDriver:  # just enough of a driver for JITFunction.run to specialise
        def get_current_target(self): return target
        def get_current_device(self): return 0
        def get_current_stream(self, device=None): return 0
        def get_active_torch_device(self): return torch.device("cpu")
        def map_python_to_cpp_type(self, ty): return ty

    seen, current = {}, []

    def hook(*, key, repr, fn, compile, is_manual_warmup, already_compiled):
        name, family = current[0]
        seen.setdefault((fn.name, key), (name, family, fn.name, fn.jit_function, compile))
        return True  # skip Triton's compile and the launch

    modules = {sys.modules[getattr(backends.table("triton"), op.name).__module__] for _, _, op, _ in cases}
    kernels = [k for m in modules for k in vars(m).values() if hasattr(k, "device_caches")]
    if modules and not kernels:  # imported under TRITON_INTERPRET: interpreted functions, no JIT to hook
        raise RuntimeError("the ops' Triton modules were imported with TRITON_INTERPRET set")
    prev_driver, prev_hook = driver._active, knobs.runtime.jit_cache_hook  # _active: None = lazy default
    driver.set_active(FakeDriver())
    knobs.runtime.jit_cache_hook = hook
    try:
        triton = backends.table("triton")
        for name, family, op, args in cases:
            current[:] = [(name, family)]
            getattr(triton, op.name)(*args)
    finally:
        driver.set_active(prev_driver)
        knobs.runtime.jit_cache_hook = prev_hook
        for k in kernels:  # their binders cached the fake sm_<arch> target: forget it
            k.device_caches.clear()
    return list(seen.values())


def compile_triton(arch: int, name, family, kernel, fn, c) -> dict:
    """Compile one captured specialisation and measure it (see the module docstring)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability
    from triton.compiler import ASTSource

    out = entry("triton", kernel, name, family)
    try:
        k = triton.compile(ASTSource(fn, c["signature"], c["constants"], c["configs"][0]),
                           target=GPUTarget("cuda", arch, 32),
                           options=dict(num_warps=c["num_warps"], num_stages=c["num_stages"],
                                        num_ctas=c["num_ctas"], enable_fp_fusion=c["enable_fp_fusion"]))
        with tempfile.TemporaryDirectory() as tmp:
            ptx, cubin = Path(tmp, "k.ptx"), Path(tmp, "k.cubin")
            ptx.write_text(k.asm["ptx"])
            cubin.write_bytes(k.asm["cubin"])
            fmad = [] if c["enable_fp_fusion"] else ["--fmad=false"]  # as Triton's make_cubin
            log = _run([get_ptxas(arch).path, "-lineinfo", *fmad, "-v", "--regAllocOptLevel=2",
                        f"--gpu-name={sm_arch_from_capability(arch)}", ptx, "-o", Path(tmp, "re.cubin")],
                       check=True).stderr
            sass, regs = inspect_cubin(cubin)
        fname = k.metadata.name
        out.update(parse_ptxas_log(log)[fname], **sass[fname])
        if regs[fname] != out["registers"]:
            raise RuntimeError(f"ptxas re-run gives {out['registers']} registers, Triton's cubin "
                               f"{regs[fname]}: Triton's ptxas flags changed")
        block = c["constants"][(list(c["signature"]).index("BLOCK"),)]
        out["elements_per_thread"] = block // (c["num_warps"] * 32)
    except Exception as e:  # recorded; the other variants go on
        out.update(ok=False, error=f"{type(e).__name__}: {e}"[-2000:])
    return out


def triton_variants(arch: int, only: str | None = None) -> list[dict]:
    """Every distinct Triton specialisation, compiled. Under TRITON_INTERPRET the kernels
    would be interpreted functions, so the work then goes to a child process without it."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return _triton_in_child(arch, only)
    return triton_here(arch, only)


def triton_here(arch: int, only: str | None = None) -> list[dict]:
    """triton_variants in this process (whose Triton kernels must not be interpreted)."""
    try:
        captured = capture_triton(arch, triton_cases(only))
    except Exception as e:
        return [entry("triton", "(launch code)", "(all)", None, ok=False, error=f"{type(e).__name__}: {e}")]
    # Two forked workers: Triton's compile holds the GIL, so threads would not overlap it.
    # The workers inherit `captured` (JITFunctions do not pickle) and take it by index.
    global _CAPTURED
    _CAPTURED = captured
    fork = multiprocessing.get_context("fork")
    try:
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=fork) as pool:
            return list(pool.map(_compile_nth, [arch] * len(captured), range(len(captured))))
    except concurrent.futures.process.BrokenProcessPool as e:  # a worker died (ptxas crash, OOM)
        return [entry("triton", "(worker)", "(all)", None, ok=False, error=f"BrokenProcessPool: {e}")]


_CAPTURED: list = []


def _compile_nth(arch: int, i: int) -> dict:
    return compile_triton(arch, *_CAPTURED[i])


def _triton_in_child(arch: int, only: str | None) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "triton.json")
        code = ("import json, sys; from ebjdat.bench.compile_report import triton_here; "
                "json.dump(triton_here(int(sys.argv[1]), sys.argv[2] or None), open(sys.argv[3], 'w'))")
        r = _run([sys.executable, "-c", code, arch, only or "", out], env=env, cwd=ROOT)
        if out.exists():
            return json.loads(out.read_text())
    return [entry("triton", "(child process)", "(all)", None, ok=False,
                  error=f"exit {r.returncode}: {(r.stderr or r.stdout)[-2000:]}")]


# ----------------------------------------------------------------------------- cuda

def cuda_elems_per_thread() -> dict[bool, int]:
    """{x is 2 bytes: N} from kElemsPerThread in kernels/reduce.cuh."""
    m = re.search(r"kElemsPerThread = sizeof\(XT\) == 2 \? (\d+) : (\d+);", (ROOT / "kernels/reduce.cuh").read_text())
    if not m:
        raise RuntimeError("kElemsPerThread not found in kernels/reduce.cuh")
    return {True: int(m.group(1)), False: int(m.group(2))}


def cuda_family(kernel: str, targs: list[str]) -> tuple[str, int | None]:
    """(family, elements one thread handles per main-loop pass) of a demangled kernel:
    ``<op>[ linf| l2[_part]]`` plus the words of the op's boolean template flags
    (``registry.Op.cuda_flags``), and kElemsPerThread<XT> of its first template argument
    (the elementwise kernels' chunk, the l2 kernels' vector per pass); (name, None) for a
    kernel of no registered op."""
    from ebjdat.ops import registry
    family = kernel.removesuffix("_kernel").replace("_linf", " linf").replace("_l2", " l2")
    owners = [op for op in registry.ops() if family == op.name or family.startswith(op.name + " ")]
    if not owners:
        return family, None   # a kernel this report does not know yet
    for index, yes, no in owners[0].cuda_flags:
        word = yes if len(targs) > index and targs[index] == "true" else no
        family += f" {word}" if word else ""
    return family, cuda_elems_per_thread()[targs[0] in ("ebjdat::f16", "ebjdat::bf16")]


def demangle(names: list[str]) -> list[str]:
    """``ebjdat::k<float, float, true>`` for each mangled kernel (mangled if no c++filt)."""
    if not shutil.which("c++filt"):
        return names
    lines = _run(["c++filt"], input="\n".join(names)).stdout.splitlines()
    return [re.sub(r"^void |\(.*\)$", "", s) for s in lines]


def compile_cu(arch: int, source: Path) -> list[dict]:
    """One .cu file to an sm_<arch> cubin: an entry per kernel in it."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp, source.stem + ".cubin")
        r = _run([nvcc_path(), *NVCC_FLAGS, "-cubin", f"-arch=sm_{arch}", "-Xptxas", "-v", source, "-o", cubin])
        if r.returncode != 0:
            return [entry("cuda", source.name, source.name, None, ok=False, error=r.stderr[-2000:])]
        sass, regs = inspect_cubin(cubin)
    out, log = [], parse_ptxas_log(r.stderr)
    for (mangled, stats), variant in zip(log.items(), demangle(list(log))):
        kernel, _, targs = variant.partition("<")
        family, ept = cuda_family(kernel.split("::")[-1], targs.rstrip(">").split(", "))
        e = entry("cuda", kernel.split("::")[-1], variant, family, **stats, **sass[mangled], elements_per_thread=ept)
        if regs[mangled] != e["registers"]:
            e.update(ok=False, error=f"ptxas log {e['registers']} registers, cuobjdump {regs[mangled]}")
        out.append(e)
    return out


def cuda_variants(arch: int, sources=None, only: str | None = None) -> list[dict]:
    """Every __global__ instantiation of kernels/*.cu (two nvcc processes at a time)."""
    if nvcc_path() is None or cuobjdump_path() is None:
        return [entry("cuda", "nvcc", "(all)", None, ok=False, error="nvcc or cuobjdump not found "
                      "(PATH, $CUDA_HOME/bin, triton's bundled cuobjdump): kernels/*.cu not compiled")]
    sources = sources or sorted((ROOT / "kernels").glob("*.cu"))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        found = [e for es in pool.map(lambda s: compile_cu(arch, Path(s)), sources) for e in es]
    return [e for e in found if only is None or not e["ok"] or re.search(only, e["variant"])]


# ----------------------------------------------------------------------------- output

def environment(arch: int) -> dict:
    """Tool versions and the commit the report was made at."""
    from importlib import metadata
    try:
        from triton.backends.nvidia.compiler import get_ptxas
        triton, ptxas = metadata.version("triton"), _version(get_ptxas(arch).path)
    except Exception:  # no triton here
        triton = ptxas = None
    nvcc = nvcc_path()
    commit = _run(["git", "rev-parse", "HEAD"], cwd=ROOT).stdout.strip() if shutil.which("git") else ""
    return {"triton": triton, "nvcc": nvcc and _version(nvcc),
            "ptxas": {"triton": ptxas, "cuda": nvcc and _version(Path(nvcc).with_name("ptxas"))},
            "commit": commit or "unknown"}


def _span(values, fmt="{:g}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}–{fmt.format(hi)}"


def markdown(variants: list[dict]) -> str:
    """One row per (backend, family): ranges of registers, spills, stack, 128-bit loads,
    SASS instructions per element (the whole kernel, and its hot loop)."""
    rows = ["| backend | kernel | variants | registers | spill bytes | stack bytes | 128-bit loads "
            "| SASS instr. / element | hot loop / element |", "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    groups = {}
    for v in variants:
        groups.setdefault((v["backend"], v["family"] or v["kernel"]), []).append(v)
    for (backend, family), vs in groups.items():
        ok = [v for v in vs if v["ok"]]
        failed = f" ({len(vs) - len(ok)} failed)" if len(ok) < len(vs) else ""
        if not ok:
            rows.append(f"| {backend} | {family} | {len(vs)}{failed} | | | | | | |")
            continue
        vec = sum(v["vector_loads"] for v in ok)
        per = [v["sass_instructions"] / v["elements_per_thread"] for v in ok if v["elements_per_thread"]]
        hot = [v["hot_instructions"] / v["elements_per_thread"] for v in ok
               if v["elements_per_thread"] and v.get("hot_instructions")]
        rows.append(f"| {backend} | {family} | {len(vs)}{failed} | {_span([v['registers'] for v in ok])} "
                    f"| {max(v['spill_bytes'] for v in ok)} | {_span([v['stack_bytes'] for v in ok])} "
                    f"| {'all' if vec == len(ok) else 'none' if not vec else f'{vec} of {len(ok)}'} "
                    f"| {_span(per, '{:.0f}') if per else ''} | {_span(hot, '{:.0f}') if hot else ''} |")
    rows.append("\nSASS instr. / element: the static count of a kernel's SASS instructions (every "
                "path: the vectorised body, the tail, the NaN and slow paths) over the elements one "
                "thread handles per pass of its main loop; the l2 kernels make two passes over a "
                "sample (a CUDA l2 thread takes one 16-byte vector per pass, a Triton one BLOCK / "
                "threads). "
                "An upper bound on what one element executes, for comparing variants. "
                "Hot loop / element: the instructions of the smallest loop holding a 128-bit load "
                "(the whole kernel where there is none) over the same elements: what a thread "
                "executes per element in the bulk of a large aligned tensor.")
    return "\n".join(rows) + "\n"


def table(variants: list[dict]) -> str:
    lines = [f"{'backend':7} {'variant':58} {'regs':>4} {'spill':>5} {'stack':>5} {'v128':>4} {'sass':>5} "
             f"{'hot':>5} {'ept':>3}"]
    for v in variants:
        if not v["ok"]:
            lines.append(f"{v['backend']:7} {v['variant'][:58]:58} FAILED: {' '.join(v['error'].split())[-80:]}")
            continue
        lines.append(f"{v['backend']:7} {v['variant'][:58]:58} {v['registers']:4} {v['spill_bytes']:5} "
                     f"{v['stack_bytes']:5} {'yes' if v['vector_loads'] else 'no':>4} "
                     f"{v['sass_instructions']:5} {v.get('hot_instructions') or '?':>5} "
                     f"{v['elements_per_thread'] or '?':>3}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ebjdat.bench.compile_report", description=__doc__.split("\n")[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 for sm_90")
    p.add_argument("--backend", choices=("triton", "cuda", "all"), default="all")
    p.add_argument("--only", help="keep variants whose name matches this regex")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--markdown", type=Path)
    a = p.parse_args(argv)
    for path in (a.json, a.markdown):   # checked before the work: never another run's file
        if path is not None and path.exists():
            p.error(f"{path} already exists: name a new file")
    variants = []
    if a.backend in ("triton", "all"):
        variants += triton_variants(a.arch, a.only)
    if a.backend in ("cuda", "all"):
        variants += cuda_variants(a.arch, only=a.only)
    a.json.write_text(json.dumps({"arch": a.arch, "environment": environment(a.arch), "variants": variants}, indent=1))
    if a.markdown:
        a.markdown.write_text(markdown(variants))
    print(table(variants))
    failed = [v["variant"] for v in variants if not v["ok"]]
    spills = [v["variant"] for v in variants if v["ok"] and v["spill_bytes"]]
    for what, names in (("failed to compile", failed), ("spill registers", spills)):
        if names:
            print(f"{len(names)} variant(s) {what}: {', '.join(names)}", file=sys.stderr)
    return 1 if failed or spills else 0


if __name__ == "__main__":
    sys.exit(main())
