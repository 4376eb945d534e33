"""The ops suite: each fused op and backend against eager torch and torch.compile of the
same math.

Measured: one call of each implementation on the same tensors (CIFAR batch 64x3x32x32
and 256 MiB; --quick: 8x3x32x32 only; fp32 and on a GPU bf16). GPU times are device times
of calls replayed inside a CUDA graph (``timing.graph_us``, labelled "device time"); the
cost of one eager call as a Python loop pays it (host + launch, or the device time if
larger) is kept as ``call_us`` (``timing.burst_us``: events around a burst of calls, no
cache flush). At CIFAR size the three tensors (2.4 MiB fp32) stay in the 60 MB L2 of an
H100/H200 across replays: such rows carry a note saying so. CPU times are perf_counter
medians. Bytes are the
compulsory traffic of ``formulas.op_bytes``; GB/s is stated as % of the copy bandwidth
measured in the same run. torch.compile's first call (the build) is excluded: each
implementation is called once before it is timed. GPU rows carry the targets below and
whether they are met (``targets``); the table ends with a summary of them.
"""
from __future__ import annotations

import functools

import torch

from .. import ops
from . import formulas, timing

S, STD, C, LO, HI, EPS, ALPHA = 1.0, 0.01, 1.0, -1.0, 1.0, 8 / 255, 2 / 255


def plain_sgld(x, g, xo=None):
    """What a careful user writes in torch: JEM-style noise plus SADA-style clip/clamp."""
    x.add_(g.clamp(-C, C), alpha=S).add_(torch.randn_like(x), alpha=STD).clamp_(LO, HI)


def plain_pgd_linf(x, g, xo):
    x.add_(g.sign(), alpha=ALPHA)
    x.copy_((xo + (x - xo).clamp(-EPS, EPS)).clamp(0, 1))


def plain_pgd_l2(x, g, xo):
    b = x.shape[0]
    gn = g.reshape(b, -1).norm(dim=1).add(1e-10).view(b, *[1] * (x.dim() - 1))
    x.add_(g / gn, alpha=ALPHA)
    d = x - xo
    dn = d.reshape(b, -1).norm(dim=1).view(b, *[1] * (x.dim() - 1))
    x.copy_((xo + d * (EPS / dn).clamp(max=1)).clamp(0, 1))


def plain_pgd_init(x, g, xo):
    x.copy_((xo + torch.empty_like(xo).uniform_(-EPS, EPS)).clamp(0, 1))


OPS = {  # name: (plain torch math, the ebjdat call)
    "sgld_step": (plain_sgld, lambda x, g, xo, gen: ops.sgld_step_(
        x, g, step_size=S, noise_std=STD, grad_clip=C, clamp=(LO, HI), generator=gen)),
    "pgd_step_linf": (plain_pgd_linf, lambda x, g, xo, gen: ops.pgd_step_(x, g, xo, alpha=ALPHA, eps=EPS)),
    "pgd_step_l2": (plain_pgd_l2, lambda x, g, xo, gen: ops.pgd_step_(
        x, g, xo, alpha=ALPHA, eps=EPS, norm="l2")),
    "pgd_init_linf": (plain_pgd_init, lambda x, g, xo, gen: ops.pgd_init_(x, xo, eps=EPS, generator=gen)),
}


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


def sizes(quick: bool) -> dict:
    return {"b8x3x32x32": (8, 3, 32, 32)} if quick else {"cifar": (64, 3, 32, 32), "256MiB": None}


def tensors(shape, dtype, device):
    """x, grad, x_orig: shape, or 256 MiB of x when shape is None."""
    shape = shape or ((256 << 20) // (torch.finfo(dtype).bits // 8) // 1024, 1024)
    x = torch.rand(shape, device=device, dtype=dtype)
    return x, torch.randn_like(x), torch.rand_like(x)


def time_impl(fn, device, quick: bool = False) -> dict:
    """{"us"}: graph-replay device time on a GPU (plus the eager "call_us"), else CPU median."""
    if torch.device(device).type == "cuda":
        return {"us": timing.graph_us(fn), "call_us": timing.burst_us(fn)}
    return {"us": timing.median_us(fn, device, warmup=1 if quick else 3, reps=5 if quick else 20)}


def run(device, quick: bool, ceil: dict) -> list[dict]:
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    dtypes = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if gpu else {})}
    rows = []
    for op, (plain, ours) in OPS.items():
        for size, shape in sizes(quick).items():
            for dname, dtype in dtypes.items():
                x, g, xo = tensors(shape, dtype, dev)
                nbytes = formulas.op_bytes(op, x)
                base = time_impl(functools.partial(plain, x, g, xo), dev, quick)
                try:
                    comp = time_impl(functools.partial(torch.compile(plain), x, g, xo), dev, quick)
                except RuntimeError as e:   # no compiler toolchain: the row says so
                    comp = {"us": None, "error": f"{type(e).__name__}: {str(e)[:80]}"}
                gen = ops.PhiloxGenerator(0, device=dev)
                # GPU: the device backends (the torch one's host-side Philox is not capturable);
                # CPU: not triton, which runs there only in its interpreter (not a timing)
                for backend in [b for b in ops.available_backends() if b != ("torch" if gpu else "triton")]:
                    try:
                        with ops.use_backend(backend):
                            ours(x, g, xo, gen)
                            t = time_impl(functools.partial(ours, x, g, xo, gen), dev, quick)
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
                           "GBps": gbs, "pct_ceiling": 100 * gbs / ceil["copy_GBps"],
                           "ceiling": "copy GB/s", "call_us": t.get("call_us"),
                           "baseline_call_us": base.get("call_us"),
                           "timing": "device time (CUDA-graph replay)" if gpu else "CPU median",
                           "note": timing.fits_in_l2(3 * x.numel() * x.element_size(), dev),
                           "eager_GBps": nbytes / (base["us"] * 1e3)}
                    if gpu:
                        row["targets"] = targets(op, size, row)
                    rows.append(row)
    return rows
