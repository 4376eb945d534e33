"""Shared fixtures. Without a GPU the Triton kernels run in Triton's interpreter, so
TRITON_INTERPRET is set here, before anything imports triton."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from ebjdat import ops  # noqa: E402

BACKENDS = ("torch", "triton", "cuda")
HAS_GPU = torch.cuda.is_available()
gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")


def require_backend(name: str) -> None:
    if name not in ops.available_backends():
        pytest.skip(f"backend {name!r} is not available here")


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each backend in turn, selected for the test's duration (skipped where missing)."""
    require_backend(request.param)
    with ops.use_backend(request.param):
        yield request.param
