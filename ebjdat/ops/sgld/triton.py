"""sgld_step's Triton kernel and launch (host side: triton_launch.py; device helpers,
Philox included: triton_device.py). Signature and math: sgld/spec.py."""
import triton
import triton.language as tl

from .. import triton_launch as launch
from ..interpreter import interpreting
from ..triton_device import advance, block_at, clamp, logical, noise_at, noise_run, store


@triton.jit
def _sgld_block(x_ptr, g_ptr, seed, offset, blk, numel, C, HW, D, step, noise_std, clip, lo, hi,
                CDT: tl.constexpr, HAS_NOISE: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                BIG: tl.constexpr, BLOCK: tl.constexpr, SFU: tl.constexpr):
    """The update of block blk (seed and offset unused without noise)."""
    offs, mask, start = block_at(blk, numel, BIG, BLOCK)
    clip = tl.full((), clip, CDT)
    g = clamp(tl.load(g_ptr + offs, mask=mask).to(CDT), -clip, clip)
    v = tl.load(x_ptr + offs, mask=mask).to(CDT) + tl.full((), step, CDT) * g
    if HAS_NOISE:
        if CHANNELS_LAST:   # memory order is not logical order: each element its own word
            z = noise_at(seed, offset, logical(offs, C, HW, D, CHANNELS_LAST).to(tl.int64), SFU)
        else:               # a block of consecutive elements: one Philox call per 4
            z = noise_run(seed, offset, start, BLOCK, SFU)
        v = v + tl.full((), noise_std, CDT) * z.to(CDT)
    store(x_ptr + offs, clamp(v, tl.full((), lo, CDT), tl.full((), hi, CDT)), mask)


@triton.jit
def _sgld_kernel(x_ptr, g_ptr, state_ptr, numel, C, HW, D,
                 step: tl.float64, noise_std: tl.float64, clip: tl.float64,
                 lo: tl.float64, hi: tl.float64,
                 CDT: tl.constexpr, HAS_NOISE: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                 BIG: tl.constexpr, BLOCK: tl.constexpr, SFU: tl.constexpr):
    """x[m] <- clamp(x + step * clamp(g, -clip, clip) + noise_std * z[logical(m)], lo, hi).
    With noise, program p takes blocks p, p + P, ... (P programs, a few per SM:
    ``triton_launch.grid``), so that few programs count themselves done on the generator;
    without, a program per block."""
    if HAS_NOISE:
        seed = tl.load(state_ptr)
        offset = tl.load(state_ptr + 1)
        for blk in range(tl.program_id(0), tl.cdiv(numel, BLOCK), tl.num_programs(0)):
            _sgld_block(x_ptr, g_ptr, seed, offset, blk, numel, C, HW, D, step, noise_std, clip, lo, hi,
                        CDT, HAS_NOISE, CHANNELS_LAST, BIG, BLOCK, SFU)
        advance(state_ptr, offset, (numel + 3) // 4)
    else:
        _sgld_block(x_ptr, g_ptr, 0, 0, tl.program_id(0), numel, C, HW, D, step, noise_std, clip, lo, hi,
                    CDT, HAS_NOISE, CHANNELS_LAST, BIG, BLOCK, SFU)


def sgld_step(x, grad, state, step_size, noise_std, grad_clip, lo, hi, layout=None):
    """x <- clamp(x + step_size * clamp(grad, -grad_clip, grad_clip) + noise_std * z, lo, hi)."""
    n = x.numel()
    noise = noise_std > 0
    c, hw, d, cl = launch.layout_args(layout if noise else None)  # only the noise needs it
    # channels_last noise draws a Philox call per element: half the block keeps its four
    # words and indices in registers (8 per thread spill, as the sm_90 compile report showed)
    block, warps = launch.elementwise(x, n, launch.BLOCK // 2 if cl else launch.BLOCK)
    with launch.launch_device(x):
        _sgld_kernel[launch.grid(x, n, block, noise)](
            x, grad, state if noise else x, n, c, hw, d,
            float(step_size), float(noise_std), float(grad_clip), float(lo), float(hi),
            CDT=launch.cdt(x), HAS_NOISE=noise, CHANNELS_LAST=cl, BIG=launch.big(n, block),
            BLOCK=block, SFU=not interpreting(), num_warps=warps, enable_fp_fusion=False)
