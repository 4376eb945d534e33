"""The ``triton`` backend's host side, shared by every op family's ``triton.py``: block
sizes, grids, the compute dtype and the launch device.

Memory: an op's x-sized tensors are dense with x's strides, so ``ptr + m`` walks every
element for memory index m. ``layout`` is None (contiguous: m is the row-major logical
index) or ``(C, H, W)`` for channels_last (N, C, H, W) tensors, where only the Philox
counter needs the logical index ``((n*C + c)*H + h)*W + w`` (``triton_device.logical``);
values are updated in memory order, and a sample (dim 0) is a contiguous run of
``D = numel / N`` elements in either layout.

Arithmetic (every kernel): loads are widened to the compute dtype CDT (fp64 for fp64 x,
else fp32), every op is rounded as in the specification (launched with
``enable_fp_fusion=False``: no FMA contraction), and the result is rounded once to x's
dtype at the store. Python scalars arrive as fp64 (annotated ``tl.float64``, so that they
reach the kernel unrounded) and are rounded to CDT in the kernel with ``tl.full(.., CDT)``,
like ``spec.scalar``. Noise is Philox4x32-10 (``philox.py``) in fp32, widened to CDT.

Generator: ``state`` is the int64 ``[seed, offset, done]`` tensor. Every program reads
seed and offset; the last program to finish (counted by an atomic on ``done``) writes the
advanced offset and resets ``done`` to 0 (``triton_device.advance``), in the same launch:
no host sync, no allocation, and fresh noise on every CUDA-graph replay.
"""
from __future__ import annotations

import contextlib
import functools

import torch
import triton
import triton.language as tl

BLOCK = 2048   # most elements per program of the elementwise kernels (8 per thread)
MIN_BLOCK = 512
VECTOR = {torch.float64: 2, torch.float32: 4, torch.float16: 8, torch.bfloat16: 8}  # per 16 bytes
INT32_LIMIT = 2**31
# Programs per SM of a launch that counts its programs on the generator: each program
# of a noisy launch makes two atomics on the generator's done-word, and a 256 MB tensor
# in blocks of 512 would make 131,072 programs contend for that one word.
NOISY_PROGRAMS_PER_SM = 8


def cdt(x: torch.Tensor):
    """The compute dtype of x: fp64 for fp64, else fp32."""
    return tl.float64 if x.dtype == torch.float64 else tl.float32


def big(numel: int, block: int) -> bool:
    """Whether indices of a launch over numel elements (plus a tail block) need int64."""
    return numel + block > INT32_LIMIT


def layout_args(layout):
    """(C, HW, D, channels_last) for ``triton_device.logical``; 1s (unused) for contiguous tensors."""
    if layout is None:
        return 1, 1, 1, False
    c, h, w = layout
    return c, h * w, c * h * w, True


def launch_device(x: torch.Tensor):
    """Launch on x's GPU (Triton launches on the current device, on its current stream)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(x: torch.Tensor) -> int:
    """SMs of x's GPU; 132 (H100 / H200) for CPU tensors (interpreter, compile report)."""
    return _sm_count(x.device.index or 0) if x.is_cuda else 132


def warps(block: int, dtype: torch.dtype) -> int:
    """Warps for one 16-byte vector per thread at least, at most 8."""
    return max(1, min(8, block // (32 * VECTOR[dtype])))


def elementwise(x: torch.Tensor, n: int, cap: int = BLOCK) -> tuple[int, int]:
    """(BLOCK, num_warps) of an elementwise launch over n elements of x: the largest
    BLOCK of 2048, 1024, 512 (at most cap) that still gives two programs per SM (a
    64x3x32x32 tensor: 384 programs of 512 on 132 SMs, where 2048 gave 96), with warps
    for one 16-byte vector per thread at least, at most 8."""
    sms = sm_count(x)
    block = cap
    while block > MIN_BLOCK and triton.cdiv(n, block) < 2 * sms:
        block //= 2
    return block, warps(block, x.dtype)


def grid(x: torch.Tensor, n: int, block: int, noisy: bool) -> tuple[int]:
    """A program per block; for a noisy launch (one that counts its programs on the
    generator) at most NOISY_PROGRAMS_PER_SM per SM, the programs striding over the blocks."""
    blocks = triton.cdiv(n, block)
    if noisy:
        blocks = min(blocks, NOISY_PROGRAMS_PER_SM * sm_count(x))
    return (blocks,)
