"""BatchNorm helpers shared by the trainer and the published loop."""
from __future__ import annotations

import contextlib

from torch import nn


@contextlib.contextmanager
def frozen_batchnorm(model: nn.Module):
    """BatchNorm momentum 0 inside the block: running statistics stay as they are."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
