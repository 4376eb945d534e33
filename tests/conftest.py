"""Shared fixtures and the split between this process and the interpreter process.

Without a GPU the Triton kernels run in Triton's interpreter, so TRITON_INTERPRET is set
here, before anything imports triton. With a GPU they compile for it, and the tests that
need the interpreter run in a child process (selection.py says how).
"""
import os

import torch

from . import selection

HAS_GPU = torch.cuda.is_available()
if not selection.gpu_machine(HAS_GPU):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from ebjdat import ops  # noqa: E402
from ebjdat.data import load_dataset  # noqa: E402
from ebjdat.models import SmallCNN  # noqa: E402

BACKENDS = ("torch", "triton", "cuda", "cpu")
GPU_REASON = "needs a CUDA GPU"   # .ci/run accepts skips for this reason only
gpu = pytest.mark.gpu             # a test that needs a CUDA GPU (skipped without one)
CHILD_ITEMS = pytest.StashKey[list]()


def require_backend(name: str) -> None:
    if name not in ops.available_backends():
        pytest.skip(f"backend {name!r} is not available here")


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each backend in turn, selected for the test's duration (skipped where missing)."""
    require_backend(request.param)
    with ops.use_backend(request.param):
        yield request.param


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real training checkpoint (one SADA-JEM step on the digits; a 256-chain buffer) in a
    run folder, one per test module."""
    from ebjdat.train import TrainConfig, Trainer
    out = tmp_path_factory.mktemp("run")
    trainer = Trainer(TrainConfig.preset("sadajem", steps=1, out=str(out), device="cpu", buffer_size=256,
                                         label_batch_size=32, batch_size=16, sgld_steps=3, pgd_steps=2))
    trainer.train_step()
    trainer.save(out / "checkpoints" / "step_00000001.pt")
    return out


class Linear(nn.Module):
    """logits = flatten(x) @ w.T + b: a model whose robustness has a closed form."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = nn.Parameter(w), nn.Parameter(b)

    def forward(self, x):
        return x.flatten(1) @ self.w.T + self.b


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and do not fight other jobs for cores):
    modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits():
    """(x, y): the first 64 test digits (shared by the evaluation tests)."""
    te = load_dataset("digits", "test")
    return te.x[:64], te.y[:64]


@pytest.fixture(scope="module")
def trained():
    """(shared by the evaluation tests) A SmallCNN with BatchNorm after 150 Adam steps on the digits (about 90 % test
    accuracy), eval mode: BatchNorm makes any stray switch to train mode visible."""
    torch.manual_seed(0)
    tr = load_dataset("digits", "train")
    model = SmallCNN(1, 10, width=16, norm="batch")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, len(tr), (64,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(tr.x[idx]), tr.y[idx]).backward()
        opt.step()
    return model.eval().requires_grad_(False)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "interpreter: runs the triton backend on CPU tensors "
                            "(Triton's interpreter; a child process on GPU machines)")
    config.addinivalue_line("markers", "slow: a sweep left out of the default run (pytest -m slow runs it)")


def pytest_itemcollected(item):
    callspec = getattr(item, "callspec", None)
    if (callspec is not None and callspec.params.get("backend") == "triton"
            and item.get_closest_marker("gpu") is None):
        item.add_marker("interpreter")
        if selection.is_sweep(item):
            item.add_marker("slow")
    if item.get_closest_marker("gpu") is not None and not HAS_GPU:
        item.add_marker(pytest.mark.skip(reason=GPU_REASON))


@pytest.hookimpl(trylast=True)  # after -m / -k: only the selected tests move
def pytest_collection_modifyitems(config, items):
    here, child, drop = selection.plan(items, gpu_machine=selection.gpu_machine(HAS_GPU),
                                       interpreting=selection.interpreting())
    config.stash[CHILD_ITEMS] = [i.nodeid for i in child]
    if child or drop:
        config.hook.pytest_deselected(items=child + drop)
    items[:] = here
