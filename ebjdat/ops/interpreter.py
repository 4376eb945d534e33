"""Whether Triton's interpreter runs the triton backend (TRITON_INTERPRET=1: kernels on CPU
tensors, for tests), read by the backend registry and by the kernels' launches."""
from __future__ import annotations

import os


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
