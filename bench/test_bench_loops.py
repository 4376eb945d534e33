"""Sampler and attack loops on WRN-28-10 (GPU only).

* SGLD, 10 steps, batch 64, SADA-JEM settings, BatchNorm in train mode: eager against a
  CUDA-graph replay; the overhead per step beyond one forward + input-gradient backward
  (itself timed as a graph replay). Target: <= 10 us per step.
* PGD-10 linf, batch 256, eval mode: torchattacks' PGD, ebjdat fp32 eager, ebjdat bf16 +
  channels_last + torch.compile + CUDA graph. Target: >= 5x torchattacks, and the same
  adversarial examples as torchattacks in fp32 (random_start=False).
"""
import pytest
import torch

import ebjdat
from ebjdat.energy import ClassifierEnergy
from ebjdat.models import WideResNet

from .conftest import HAS_GPU, graph_us, median_us

pytestmark = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")


def _wrn(norm="batch"):
    torch.manual_seed(0)
    return WideResNet(28, 10, norm=norm).cuda()


def test_bench_sgld_loop(benchmark, record):
    model = _wrn().train()
    energy = ClassifierEnergy(model)
    x0 = torch.rand(64, 3, 32, 32, device="cuda") * 2 - 1
    kw = dict(n_steps=10, step_size=1.0, grad_clip=1.0, clamp=(-1.0, 1.0))
    eager = ebjdat.SGLD(energy, **kw)
    graphed = ebjdat.SGLD(energy, cuda_graph=True, **kw)
    x = x0.clone().requires_grad_(True)

    def fwd_bwd():
        torch.autograd.grad(energy(x).sum(), x)

    times = {"eager_us": median_us(lambda: eager.sample(x_init=x0)),
             "graph_us": median_us(lambda: graphed.sample(x_init=x0)),
             "fwd_bwd_graph_us": graph_us(fwd_bwd, calls=10)}
    times["overhead_per_step_us"] = times["graph_us"] / 10 - times["fwd_bwd_graph_us"]
    record(case="sgld_loop/wrn28-10/b64/10steps", **times,
           speedup_graph_vs_eager=times["eager_us"] / times["graph_us"])
    benchmark.extra_info.update(times)
    benchmark.pedantic(lambda: (graphed.sample(x_init=x0), torch.cuda.synchronize()), rounds=5)


def test_bench_pgd10(benchmark, record):
    model = _wrn().eval()
    x = torch.rand(256, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (256,), device="cuda")
    kw = dict(eps=8 / 255, alpha=2 / 255, steps=10)
    ours = ebjdat.PGD(model, random_start=False, **kw)
    times = {"ebjdat_fp32_us": median_us(lambda: ours(x, y))}
    row = {}
    try:
        import torchattacks
        ta = torchattacks.PGD(model, random_start=False, **kw)
        times["torchattacks_us"] = median_us(lambda: ta(x, y))
        row["max_abs_diff_vs_torchattacks_fp32"] = (ours(x, y) - ta(x, y)).abs().max().item()
    except ImportError:
        pass
    fast_model = torch.compile(_wrn().eval().to(memory_format=torch.channels_last))
    fast = ebjdat.PGD(fast_model, random_start=True, cuda_graph=True, **kw)
    xc = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fast(xc, y)
        times["ebjdat_bf16_compile_graph_us"] = median_us(lambda: fast(xc, y))
    base = times.get("torchattacks_us", times["ebjdat_fp32_us"])
    row.update({f"speedup_{k[:-3]}": base / v for k, v in times.items()})
    record(case="pgd10/wrn28-10/b256", baseline="torchattacks" if "torchattacks_us" in times
           else "ebjdat_fp32", **times, **row)
    benchmark.extra_info.update({**times, **row})
    with torch.autocast("cuda", dtype=torch.bfloat16):
        benchmark.pedantic(lambda: (fast(xc, y), torch.cuda.synchronize()), rounds=5)
