"""The ops suite: each fused op and backend against eager torch and torch.compile of the
same math, for every bench case of every registered op (``registry.Op.bench``: the op's
settings and its math in plain torch, written beside the op).

Measured: one call of each implementation on the same tensors (CIFAR batch 64x3x32x32
and 256 MiB; --quick: 8x3x32x32 only; fp32 and on a GPU bf16). GPU times are device times
of calls replayed inside a CUDA graph (``timing.graph_us``, labelled "device time"); the
cost of one eager call as a Python loop pays it (host + launch, or the device time if
larger) is kept as ``call_us`` (``timing.burst_us``: events around a burst of calls, no
cache flush). At CIFAR size the three tensors (2.4 MiB fp32) stay in the 60 MB L2 of an
H100/H200 across replays: such rows carry a note saying so. CPU times are perf_counter
medians. Bytes are the compulsory traffic of ``formulas.op_bytes``; GB/s is stated as % of
the copy bandwidth measured in the same run: on a GPU the large copy of
``timing.ceilings``; on the CPU a copy moving the row's own bytes (``copy_same_bytes``),
because a small working set stays in the CPU's caches and outruns a copy of memory-sized
tensors (CIFAR size against the 64 MiB copy read 227 %). A CPU row still above 100 % of a
copy of its bytes carries a note saying why. torch.compile's first call (the build) is excluded: each
implementation is called once before it is timed. GPU rows carry the targets below and
whether they are met (``targets``); the table ends with a summary of them. CPU runs add
rows with one thread at 512 and 1M fp32 elements: the noisy SGLD step and the linf PGD step
of the backend ``auto`` picks against the same steps written by hand in eager torch, with
the CPU targets (``CPU_TARGETS``).
"""
from __future__ import annotations

import functools

import torch

from .. import ops
from ..ops import registry
from . import formulas, timing


def _plain(case: str, *tensors):
    """The case's math in eager torch (what a careful user writes) on ``tensors``."""
    _, bench = CASES[case]
    bench.plain(*tensors, **bench.kwargs)


def _ours(case: str, *tensors_and_generator):
    """The fused op of the case on ``tensors``, the last argument its PhiloxGenerator."""
    op, bench = CASES[case]
    *tensors, gen = tensors_and_generator
    extra = {"generator": gen} if op.generator is not None else {}
    getattr(ops, op.public_name)(*tensors, **bench.kwargs, **extra)


# Every bench case of every registered op (registry.Op.bench): case name -> (op, case).
CASES = {bench.name: (op, bench) for op in registry.ops() for bench in op.bench}
# case -> (plain torch math, the ebjdat call): plain(*tensors(...)), ours(*tensors(...), generator)
OPS = {case: (functools.partial(_plain, case), functools.partial(_ours, case)) for case in CASES}


# The fused ops' GPU targets, evaluated on every GPU row and reported (``targets`` in the
# row, the summary under the table), never asserted: a shared machine's timing is no test.
PCT_COPY_TARGET = {"pgd_step_linf": 90.0}   # % of the copy bandwidth at 256 MiB
PCT_COPY_DEFAULT = 85.0                     # ... for the other ops
VS_EAGER_TARGET = 3.0     # x eager torch at CIFAR size, both timed in CUDA-graph replay
VS_COMPILE_TARGET = 1.0   # x torch.compile of the same math, at every size: never slower


def targets(op: str, size: str, row: dict) -> list[dict]:
    """[{"target", "value", "met"}] for one GPU row of ``op`` at ``size``; "met" is None
    when the figure is missing (torch.compile failed to build)."""
    vs = row.get("speedup_vs_compile")
    out = [{"target": f">= {VS_COMPILE_TARGET:g}x torch.compile", "value": vs,
            "met": None if vs is None else vs >= VS_COMPILE_TARGET}]
    if size == "256MiB":
        pct = PCT_COPY_TARGET.get(op, PCT_COPY_DEFAULT)
        out.append({"target": f">= {pct:g}% of copy bandwidth", "value": row["pct_ceiling"],
                    "met": row["pct_ceiling"] >= pct})
    elif size == "cifar":
        out.append({"target": f">= {VS_EAGER_TARGET:g}x eager", "value": row["speedup"],
                    "met": row["speedup"] >= VS_EAGER_TARGET})
    return out


# The CPU targets (one thread, medians; reported, never asserted): the backend auto picks
# on the CPU against the step a user writes by hand in eager torch, on fp32 vectors.
CPU_SIZES = {"512": 512, "1M": 1 << 20}
CPU_TARGETS = {("sgld_noisy", "1M"): 2.0,        # >= 2x the hand-written step
               ("sgld_noisy", "512"): 1 / 1.3,   # within 1.3x of it
               ("pgd_linf", "1M"): 2.0}          # >= 2x torchattacks' arithmetic
SGLD_H, SGLD_S, PGD_ALPHA, PGD_EPS = 0.1, 0.01, 2 / 255, 8 / 255


def _hand_sgld(x, g, _xo):
    """The eager SGLD step without fusion: x + h g + s N(0, 1), two in-place adds."""
    x.add_(g, alpha=SGLD_H).add_(torch.randn_like(x), alpha=SGLD_S)


def _hand_pgd(x, g, xo):
    """torchattacks' PGD step arithmetic: ascend by alpha sign(g), project to the eps box, clamp."""
    adv = x + PGD_ALPHA * g.sign()
    delta = torch.clamp(adv - xo, min=-PGD_EPS, max=PGD_EPS)
    x.copy_(torch.clamp(xo + delta, min=0, max=1))


def _fused_sgld(x, g, _xo, gen):
    ops.sgld_step_(x, g, step_size=SGLD_H, noise_std=SGLD_S, generator=gen)


def _fused_pgd(x, g, xo, _gen):
    ops.pgd_step_(x, g, xo, alpha=PGD_ALPHA, eps=PGD_EPS)


CPU_CASES = {"sgld_noisy": (_hand_sgld, _fused_sgld), "pgd_linf": (_hand_pgd, _fused_pgd)}


def run_cpu_targets(report=None) -> list[dict]:
    """The CPU target rows: each case at each CPU size with torch.set_num_threads(1), and
    at 1M again with torch's thread count when it is above 1 (reported, no target): the
    backend ``auto`` picks against the hand-written eager step (``CPU_TARGETS``), each
    handed to ``report`` as it is measured. Their figures are ``hand_us`` / ``fused_us`` / ``ratio`` and the
    verdict ``cpu_target_met``: not the table's ``ours_us`` columns (torch.compile and
    bandwidth do not apply) nor the GPU ``targets``."""
    from ..ops import backends
    threads = torch.get_num_threads()
    backend, why = backends.auto_choice("cpu")
    runs = [(1, size) for size in CPU_SIZES] + ([(threads, "1M")] if threads > 1 else [])
    rows = timing.Rows(report)
    try:
        for case, (hand, fused) in CPU_CASES.items():
            for t, size in runs:
                torch.set_num_threads(t)
                rows.append(_cpu_row(case, size, t, hand, fused, backend, why))
    finally:
        torch.set_num_threads(threads)
    return list(rows)


def _cpu_row(case, size, t, hand, fused, backend, why) -> dict:
    """One CPU row: the fused op against the hand-written step at ``t`` threads."""
    n = CPU_SIZES[size]
    gen = ops.PhiloxGenerator(0)
    x, g, xo = torch.rand(n), torch.randn(n), torch.rand(n)
    reps = 200 if n < 4096 else 30   # --quick too: a row takes well under a second
    base = timing.median_us(functools.partial(hand, x, g, xo), "cpu", warmup=3, reps=reps)
    ours = timing.median_us(functools.partial(fused, x, g, xo, gen), "cpu", warmup=3, reps=reps)
    row = {"suite": "ops", "case": f"{case}/fp32/{size}/{t}-thread", "baseline": "hand-written eager",
           "ours": f"ebjdat[auto={backend}]", "hand_us": base, "fused_us": ours,
           "ratio": base / ours, "timing": f"CPU median, {t} thread{'s' if t > 1 else ''}", "auto_why": why}
    goal = CPU_TARGETS.get((case, size)) if t == 1 else None
    if goal is not None:
        row["cpu_target"] = (f">= {goal:g}x hand-written eager" if goal >= 1
                             else f"within {1 / goal:g}x of hand-written eager")
        row["cpu_target_met"] = row["ratio"] >= goal
    return row


def sizes(quick: bool) -> dict:
    return {"b8x3x32x32": (8, 3, 32, 32)} if quick else {"cifar": (64, 3, 32, 32), "256MiB": None}


def tensors(case: str, shape, dtype, device) -> tuple:
    """The case's op's tensors (registry.Op.make_tensors): its target of ``shape`` (or 256
    MiB when shape is None), the others sized by it; uniform or normal values as the op
    describes them, per-sample ones fp32, masks zeroed."""
    op, _ = CASES[case]
    shape = shape or ((256 << 20) // (torch.finfo(dtype).bits // 8) // 1024, 1024)

    def make(size, dt, fill):
        if fill == "mask":
            return torch.zeros(size, dtype=torch.bool, device=device)
        return (torch.rand if fill == "uniform" else torch.randn)(size, device=device, dtype=dt)
    return tuple(op.make_tensors(shape, dtype, make).values())


def time_impl(fn, device, quick: bool = False) -> dict:
    """{"us"}: graph-replay device time on a GPU (plus the eager "call_us"), else CPU median."""
    if torch.device(device).type == "cuda":
        return {"us": timing.graph_us(fn), "call_us": timing.burst_us(fn)}
    return {"us": timing.median_us(fn, device, warmup=1 if quick else 3, reps=5 if quick else 20)}


def copy_same_bytes(nbytes: int, device) -> float:
    """GB/s of a torch copy moving ``nbytes`` (nbytes / 8 fp32 read and written): the
    ceiling of a CPU row whose working set is that small. The faster of torch's thread
    count and one thread, each a median of at least 50 calls: a ceiling is the best a
    copy does, and torch's threaded copy of a few hundred KiB can wait milliseconds for a
    core another process holds."""
    src = torch.rand(max(1, nbytes // 8), device=device)
    dst = torch.empty_like(src)
    threads = torch.get_num_threads()
    times = []
    try:
        for t in sorted({threads, 1}):
            torch.set_num_threads(t)
            times.append(timing.median_us(lambda: dst.copy_(src), device, warmup=5, reps=50, min_s=0.05))
    finally:
        torch.set_num_threads(threads)
    return nbytes / (min(times) * 1e3)


def _ceiling_note(pct: float, nbytes: int) -> str | None:
    """A CPU row's note when it beats a copy of its own bytes (> 100 %), else None."""
    if pct <= 100:
        return None
    return (f"above 100 % of a torch copy moving the same {nbytes / 2**10:,.0f} KiB: at this size the copy's "
            f"fixed cost per call (dispatch, thread start) outweighs its data movement, so the op is not "
            f"beating memory bandwidth")


def run(device, quick: bool, ceil: dict, report=None) -> list[dict]:
    """Every case of OPS at every size and dtype, each backend against eager torch and
    torch.compile (the module docstring); ``report`` gets each row as it is measured."""
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    dtypes = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if gpu else {})}
    rows = timing.Rows(report)
    same_bytes = {}   # CPU: nbytes -> GB/s of a copy of that many bytes
    for op, (plain, ours) in OPS.items():
        for size, shape in sizes(quick).items():
            for dname, dtype in dtypes.items():
                ts = tensors(op, shape, dtype, dev)
                x = ts[0]
                nbytes = formulas.op_bytes(op, x)
                if not gpu and nbytes not in same_bytes:
                    same_bytes[nbytes] = copy_same_bytes(nbytes, dev)
                copy_gbs = ceil["copy_GBps"] if gpu else same_bytes[nbytes]
                base = time_impl(functools.partial(plain, *ts), dev, quick)
                try:
                    comp = time_impl(functools.partial(torch.compile(plain), *ts), dev, quick)
                except RuntimeError as e:   # no compiler toolchain: the row says so
                    comp = {"us": None, "error": f"{type(e).__name__}: {str(e)[:80]}"}
                gen = ops.PhiloxGenerator(0, device=dev)
                # GPU: the device backends (the torch one's host-side Philox is not capturable);
                # CPU: not triton, which runs there only in its interpreter (not a timing)
                for backend in [b for b in ops.available_backends() if b != ("torch" if gpu else "triton")]:
                    try:
                        with ops.use_backend(backend):
                            ours(*ts, gen)
                            t = time_impl(functools.partial(ours, *ts, gen), dev, quick)
                    except (RuntimeError, NotImplementedError, ValueError, TypeError) as e:  # no path here
                        rows.append({"suite": "ops", "case": f"{op}/{dname}/{size}", "ours": f"ebjdat[{backend}]",
                                     "skipped": f"{type(e).__name__}: {str(e)[:80]}"})
                        continue
                    gbs = nbytes / (t["us"] * 1e3)
                    row = {"suite": "ops", "case": f"{op}/{dname}/{size}", "baseline": "eager torch",
                           "ours": f"ebjdat[{backend}]", "baseline_us": base["us"], "ours_us": t["us"],
                           "compile_us": comp["us"], "speedup": base["us"] / t["us"],
                           "speedup_vs_compile": comp["us"] and comp["us"] / t["us"],
                           "compile_error": comp.get("error"), "bytes": nbytes,
                           "GBps": gbs, "pct_ceiling": 100 * gbs / copy_gbs,
                           "ceiling": "copy GB/s" if gpu else "copy of same bytes", "copy_GBps": copy_gbs,
                           "call_us": t.get("call_us"),
                           "baseline_call_us": base.get("call_us"),
                           "timing": "device time (CUDA-graph replay)" if gpu else "CPU median",
                           "note": (timing.fits_in_l2(sum(v.numel() * v.element_size() for v in ts), dev)
                                    if gpu else _ceiling_note(100 * gbs / copy_gbs, nbytes)),
                           "eager_GBps": nbytes / (base["us"] * 1e3)}
                    if gpu:
                        row["targets"] = targets(op, size, row)
                    rows.append(row)
    if not gpu:
        return [*rows, *run_cpu_targets(report)]
    return list(rows)
