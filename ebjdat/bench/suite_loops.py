"""The sampler and attack loops.

loops: K SGLD steps (SADA-JEM settings: clip 1, clamp [-1, 1]) on a batch, the model in
train mode. Baseline: a plain autograd loop with the update in torch ops; ours: ebjdat's
SGLD eager and, on a GPU, replayed as one CUDA graph. Model FLOP utilisation counts
K * B forward + input-gradient passes (formulas.model_flops).

overhead: the per-step cost of the sampler itself, on a model of negligible cost (a
16 -> 10 linear layer, batch 64): the same loop run with K and 2K steps, the time
difference divided by K, so that fixed costs (copies in and out, the launch of a graph
replay) cancel. Repeated 5 times: the row gives the median and ``noise_us``, half the
range of the 5 estimates. K = 20 (a difference of 20 steps) keeps the noise of a
per-step figure well under a microsecond on a GPU.

attack: PGD-10 linf in eval mode. (a) cross-entropy objective, no random start:
torchattacks' PGD (when installed) against ebjdat's PGD: eager fp32; on a GPU also fp32
replayed as a CUDA graph (the same math: ``max_abs_diff_vs_torchattacks``) and with
everything on (bf16 autocast, channels_last model and input, CUDA graph). (b) the EB-JDAT objective: the published baseline's micro-batched attack
(ebjdat.published.published_attack: micro-batches of 2, clean logits recomputed, two
forwards per step) against ebjdat's full-batch PGD.

Sizes: WRN-28-10 on 32x32 (batch 64 for SGLD, 256 for PGD) on a GPU; --quick: the digits
SmallCNN on 8x8 inputs, batch 32. Times: CUDA-event medians on a GPU, perf_counter
medians on the CPU.
"""
from __future__ import annotations

import copy
import statistics

import torch
from torch import nn

import ebjdat
from ebjdat.energy import ClassifierEnergy
from ebjdat.models import SmallCNN, WideResNet

from ..published import PublishedLoop
from . import formulas, timing


def model_and_shape(device, quick: bool):
    torch.manual_seed(0)
    if quick:
        return SmallCNN(1, 10).to(device), (1, 8, 8), "small_cnn/8x8"
    return WideResNet(28, 10).to(device), (3, 32, 32), "wrn28-10/32x32"


def _time(fn, device, quick, slow=False):
    return timing.median_us(fn, device, warmup=1 if quick or slow else 3,
                            reps=3 if quick else 2 if slow else 10, do_bench=False)


def _row(suite, case, base_name, ours_name, base_us, ours_us, flops=None, ceil=None, **extra):
    row = {"suite": suite, "case": case, "baseline": base_name, "ours": ours_name,
           "baseline_us": base_us, "ours_us": ours_us, "speedup": base_us / ours_us, **extra}
    if flops and ceil:
        rate = flops / (ours_us * 1e-6)
        row.update(model_TFLOPs=rate / 1e12, mfu_pct=100 * rate / (ceil["matmul_TFLOPs"] * 1e12),
                   ceiling=f"{ceil['matmul_dtype']} matmul")
        row["pct_ceiling"] = row["mfu_pct"]
    return row


def plain_sgld(model, x0, n: int):
    """The baseline: n SADA-JEM SGLD steps written in plain torch (autograd + update ops)."""
    x = x0.clone()
    for _ in range(n):
        xi = x.detach().requires_grad_(True)
        g = torch.autograd.grad(model(xi).logsumexp(1).sum(), xi)[0]
        x = (x + 1.0 * g.clamp(-1, 1)).clamp(-1, 1)
    return x


def run_loops(device, quick: bool, ceil: dict, report=None) -> list[dict]:
    """K SGLD steps: the plain autograd loop against ebjdat's SGLD (the module docstring);
    ``report`` gets each row as it is measured."""
    dev = torch.device(device)
    model, shape, name = model_and_shape(dev, quick)
    model.train()
    b, k = (32, 10) if quick else (64, 10)
    x0 = torch.rand(b, *shape, device=dev) * 2 - 1
    flops = k * b * formulas.model_flops(model, shape, device=dev)["fwd_xgrad"]

    def plain():
        return plain_sgld(model, x0, k)

    kw = {"n_steps": k, "step_size": 1.0, "grad_clip": 1.0, "clamp": (-1.0, 1.0)}
    energy = ClassifierEnergy(model)
    base_us = _time(plain, dev, quick)
    case = f"sgld{k}/{name}/b{b}"
    eager = ebjdat.SGLD(energy, **kw)
    rows = timing.Rows(report)
    rows.append(_row("loops", case, "plain torch loop", "ebjdat SGLD eager", base_us,
                     _time(lambda: eager.sample(x_init=x0), dev, quick), flops, ceil))
    if dev.type == "cuda":
        graphed = ebjdat.SGLD(energy, cuda_graph=True, **kw)
        rows.append(_row("loops", case, "plain torch loop", "ebjdat SGLD cuda graph", base_us,
                         _time(lambda: graphed.sample(x_init=x0), dev, quick), flops, ceil))
    return list(rows)


def _per_step_us(make, device, k: int, repeats: int = 5) -> tuple[float, float]:
    """(median, half-range) over ``repeats`` of (time(make(2k)) - time(make(k))) / k in us.
    GPU: do_bench medians (CUDA events); CPU: perf_counter medians of 5 calls."""
    fk, f2k = make(k), make(2 * k)
    gpu = torch.device(device).type == "cuda"
    est = []
    for _ in range(repeats):
        t = [timing.median_us(f, device) if gpu else timing.median_us(f, device, warmup=1, reps=5)
             for f in (fk, f2k)]
        est.append((t[1] - t[0]) / k)
    return statistics.median(est), (max(est) - min(est)) / 2


def run_overhead(device, quick: bool, ceil: dict, report=None) -> list[dict]:
    """The sampler's own cost per step (the module docstring); ``report`` gets each row as
    it is measured."""
    dev = torch.device(device)
    torch.manual_seed(0)
    model = nn.Linear(16, 10).to(dev)
    x0 = torch.rand(64, 16, device=dev) * 2 - 1
    energy = ClassifierEnergy(model)
    k = 5 if quick else 20
    kw = {"step_size": 1.0, "grad_clip": 1.0, "clamp": (-1.0, 1.0)}

    def plain(n):
        return lambda: plain_sgld(model, x0, n)

    def ours(graph):
        def make(n):
            sgld = ebjdat.SGLD(energy, n_steps=n, cuda_graph=graph, **kw)
            return lambda: sgld.sample(x_init=x0)
        return make

    repeats = 3 if quick else 5
    base, base_noise = _per_step_us(plain, dev, k, repeats)
    case = "sgld-overhead per step/linear16/b64"
    variants = [("ebjdat SGLD eager", False)] + ([("ebjdat SGLD cuda graph", True)] if dev.type == "cuda" else [])
    rows = timing.Rows(report)
    for name, graph in variants:
        us, noise = _per_step_us(ours(graph), dev, k, repeats)
        rows.append(_row("loops", case, "plain torch loop", name, base, us, per_step_us=us,
                         noise_us=noise, baseline_noise_us=base_noise, steps_difference=k))
    return list(rows)


def run_attack(device, quick: bool, ceil: dict, cfg=None, report=None) -> list[dict]:
    """PGD-10 against torchattacks and the published micro-batched attack (the module
    docstring); ``report`` gets each row as it is measured."""
    dev = torch.device(device)
    model, shape, name = model_and_shape(dev, quick)
    model.eval()
    b, steps = (32, 10) if quick else (256, 10)
    x = torch.rand(b, *shape, device=dev)
    y = torch.randint(0, 10, (b,), device=dev)
    per = formulas.model_flops(model, shape, device=dev)
    flops = b * (per["fwd"] + steps * per["fwd_xgrad"])
    kw = {"eps": 8 / 255, "alpha": 2 / 255, "steps": steps}
    rows, case = timing.Rows(report), f"pgd{steps}-ce/{name}/b{b}"
    ours = ebjdat.PGD(model, random_start=False, **kw)
    ours_us = _time(lambda: ours(x, y), dev, quick)
    try:
        import torchattacks
        ta = torchattacks.PGD(model, random_start=False, **kw)
        base, base_us = "torchattacks PGD", _time(lambda: ta(x, y), dev, quick)
        diff = (ours(x, y) - ta(x, y)).abs().max().item()
    except ImportError:
        base, base_us, diff = "ebjdat PGD eager (torchattacks missing)", ours_us, None
    rows.append(_row("attack", case, base, "ebjdat PGD eager", base_us, ours_us, flops, ceil,
                     max_abs_diff_vs_torchattacks=diff))
    if dev.type == "cuda":
        graphed = ebjdat.PGD(model, random_start=False, cuda_graph=True, **kw)
        diff = None if diff is None else (graphed(x, y) - ta(x, y)).abs().max().item()
        rows.append(_row("attack", case, base, "ebjdat PGD fp32 cuda graph (same math)", base_us,
                         _time(lambda: graphed(x, y), dev, quick), flops, ceil,
                         max_abs_diff_vs_torchattacks=diff))
        cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        fast = ebjdat.PGD(cl_model, random_start=False, cuda_graph=True, **kw)

        def everything():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return fast(x_cl, y)
        rows.append(_row("attack", case, base, "ebjdat PGD bf16 + channels_last + cuda graph",
                         base_us, _time(everything, dev, quick), flops, ceil))
    # (b) the EB-JDAT objective, as the training loop runs it ([-1, 1] inputs, no projection)
    from ebjdat.train import TrainConfig
    cfg = cfg or TrainConfig.preset("sadajem", dataset="digits", device=str(dev), buffer_size=64,
                                    batch_size=8, pgd_steps=steps, init="uniform")
    xs = x * 2 - 1
    ref = PublishedLoop(cfg, copy.deepcopy(model), xs, y, 10, dev)
    pgd = ebjdat.PGD(model, eps=None, start_eps=cfg.pgd_eps, alpha=cfg.pgd_alpha, steps=steps,
                     clamp=(-1.0, 1.0), loss="ebjdat",
                     generator=ebjdat.ops.PhiloxGenerator(0, device=dev))
    case = f"pgd{steps}-ebjdat/{name}/b{b}"
    ref_us = _time(lambda: ref.attack(xs, y), dev, quick, slow=True)
    rows.append(_row("attack", case, "published (micro-batch 2)", "ebjdat PGD eager", ref_us,
                     _time(lambda: pgd(xs, y), dev, quick), flops, ceil))
    return list(rows)
