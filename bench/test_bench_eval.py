"""Evaluation throughput on WRN-28-10 (GPU only): images per second of PGD-20 and of
AutoAttack "standard", ebjdat's evaluation against torchattacks' own, on the same 512
CIFAR-shaped points of a randomly initialised model in eval mode (the attacks' cost does not
depend on the weights' quality). Whole-call CUDA-event medians; the accuracies are recorded
beside the timings so the two implementations can be seen to agree.
"""
import pytest
import torch

from ebjdat.evaluate import PixelModel, autoattack_correct, pgd_correct
from ebjdat.models import WideResNet

from .conftest import HAS_GPU, median_us

pytestmark = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
EPS = 8 / 255


def _setup(n):
    torch.manual_seed(0)
    model = PixelModel(WideResNet(28, 10, norm="batch").cuda().eval())
    x = torch.rand(n, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (n,), device="cuda")
    return model, x, y


def test_bench_eval_pgd20(benchmark, record):
    ta = pytest.importorskip("torchattacks", reason="needs a CUDA GPU and torchattacks")
    model, x, y = _setup(512)
    ours = lambda: pgd_correct(model, x, y, eps=EPS, steps=20, alpha=2 / 255, batch_size=256)  # noqa: E731
    atk = ta.PGD(model, eps=EPS, alpha=2 / 255, steps=20, random_start=True)
    theirs = lambda: torch.cat([(model(atk(x[i:i + 256], y[i:i + 256])).argmax(1) == y[i:i + 256])  # noqa: E731
                                for i in range(0, 512, 256)])
    t = {"ebjdat_us": median_us(ours, warmup=1, reps=3, do_bench=False),
         "torchattacks_us": median_us(theirs, warmup=1, reps=3, do_bench=False)}
    row = {**t, "ebjdat_images_per_s": 512 / (t["ebjdat_us"] * 1e-6),
           "torchattacks_images_per_s": 512 / (t["torchattacks_us"] * 1e-6),
           "speedup": t["torchattacks_us"] / t["ebjdat_us"],
           "ebjdat_acc": ours().float().mean().item(), "torchattacks_acc": theirs().float().mean().item()}
    record(case="eval/pgd20/wrn28-10/n512", **row)
    benchmark.extra_info.update(row)
    benchmark.pedantic(lambda: (ours(), torch.cuda.synchronize()), rounds=1)


def test_bench_eval_autoattack(benchmark, record):
    ta = pytest.importorskip("torchattacks", reason="needs a CUDA GPU and torchattacks")
    model, x, y = _setup(128)
    ours = lambda: autoattack_correct(model, x, y, eps=EPS, n_classes=10)[0]  # noqa: E731
    atk = ta.AutoAttack(model, norm="Linf", eps=EPS, version="standard", n_classes=10, seed=0)
    theirs = lambda: model(atk(x, y)).argmax(1) == y  # noqa: E731
    t = {"ebjdat_us": median_us(ours, warmup=0, reps=1, do_bench=False),
         "torchattacks_us": median_us(theirs, warmup=0, reps=1, do_bench=False)}
    row = {**t, "ebjdat_images_per_s": 128 / (t["ebjdat_us"] * 1e-6),
           "torchattacks_images_per_s": 128 / (t["torchattacks_us"] * 1e-6),
           "note": "torchattacks.AutoAttack runs APGD/FAB at 10 steps; ebjdat at the standard 100"}
    record(case="eval/autoattack/wrn28-10/n128", **row)
    benchmark.extra_info.update({k: v for k, v in row.items() if k != "note"})
    benchmark.pedantic(lambda: (ours(), torch.cuda.synchronize()), rounds=1)
