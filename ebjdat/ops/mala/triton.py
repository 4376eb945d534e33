"""mala_propose's and mala_accept's Triton kernels and launches (host side:
triton_launch.py; device helpers, Philox included: triton_device.py). Signatures and
math: mala/spec.py."""
import math

import triton
import triton.language as tl

from .. import triton_launch as launch
from ..interpreter import interpreting
from ..triton_device import advance, block_at, logical, noise_at, noise_run, store, uniform_at


@triton.jit
def _mala_propose_kernel(xp_ptr, x_ptr, g_ptr, state_ptr, numel, C, HW, D, step: tl.float64,
                         noise_std: tl.float64, CDT: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                         BIG: tl.constexpr, BLOCK: tl.constexpr, SFU: tl.constexpr):
    """xp[m] <- x[m] + step * g[m] + noise_std * z[logical(m)] (sgld_step's arithmetic:
    x + step * g first, then the noise). Program p takes blocks p, p + P, ... (a few
    programs per SM: ``triton_launch.grid``)."""
    seed = tl.load(state_ptr)
    offset = tl.load(state_ptr + 1)
    for blk in range(tl.program_id(0), tl.cdiv(numel, BLOCK), tl.num_programs(0)):
        offs, mask, start = block_at(blk, numel, BIG, BLOCK)
        g = tl.load(g_ptr + offs, mask=mask).to(CDT)
        v = tl.load(x_ptr + offs, mask=mask).to(CDT) + tl.full((), step, CDT) * g
        if CHANNELS_LAST:   # memory order is not logical order: each element its own word
            z = noise_at(seed, offset, logical(offs, C, HW, D, CHANNELS_LAST).to(tl.int64), SFU)
        else:               # a block of consecutive elements: one Philox call per 4
            z = noise_run(seed, offset, start, BLOCK, SFU)
        store(xp_ptr + offs, v + tl.full((), noise_std, CDT) * z.to(CDT), mask)
    advance(state_ptr, offset, (numel + 3) // 4)


@triton.jit
def _mala_accept_kernel(x_ptr, xp_ptr, e_ptr, ep_ptr, lf_ptr, lr_ptr, acc_ptr, state_ptr, batch, D,
                        tiles, items, PDT: tl.constexpr, BIG: tl.constexpr, BLOCK: tl.constexpr):
    """Work item k = b * tiles + t: sample b's decision, and tile t (BLOCK elements) of
    its row copied from x_prop when accepted; the decision is stored once, by tile 0."""
    seed = tl.load(state_ptr)
    offset = tl.load(state_ptr + 1)
    for k in range(tl.program_id(0), items, tl.num_programs(0)):
        if BIG:
            item = k.to(tl.int64)
        else:
            item = k
        b = item // tiles
        t = item - b * tiles
        a = (tl.load(e_ptr + b).to(PDT) - tl.load(ep_ptr + b).to(PDT)) + \
            (tl.load(lr_ptr + b).to(PDT) - tl.load(lf_ptr + b).to(PDT))
        u = uniform_at(seed, offset, b.to(tl.int64))
        take = tl.log(u.to(tl.float64)) < a.to(tl.float64)
        tl.store(acc_ptr + b, take, mask=t == 0)
        offs = b * D + t * BLOCK + tl.arange(0, BLOCK)
        copy = offs < tl.where(take, b * D + D, 0)   # the row's end, or nothing when rejected
        tl.store(x_ptr + offs, tl.load(xp_ptr + offs, mask=copy), mask=copy)
    advance(state_ptr, offset, (batch + 3) // 4)


def mala_propose(x_prop, x, grad, state, step_size, layout=None):
    """x_prop <- x + step_size * grad + sqrt(2 step_size) * z."""
    n = x_prop.numel()
    c, hw, d, cl = launch.layout_args(layout)
    # channels_last draws a Philox call per element: half the block (as sgld_step)
    block, warps = launch.elementwise(x_prop, n, launch.BLOCK // 2 if cl else launch.BLOCK)
    with launch.launch_device(x_prop):
        _mala_propose_kernel[launch.grid(x_prop, n, block, True)](
            x_prop, x, grad, state, n, c, hw, d, float(step_size), math.sqrt(2.0 * step_size),
            CDT=launch.cdt(x_prop), CHANNELS_LAST=cl, BIG=launch.big(n, block), BLOCK=block,
            SFU=not interpreting(), num_warps=warps, enable_fp_fusion=False)


def mala_accept(x, x_prop, energy, energy_prop, log_q_fwd, log_q_rev, accepted, state, layout=None):
    """The per-sample Metropolis decisions; accepted rows of x from x_prop."""
    batch = x.shape[0]
    d = x.numel() // batch
    block = min(launch.BLOCK, max(128, triton.next_power_of_2(d)))
    tiles = max(1, triton.cdiv(d, block))   # a sample of no elements still decides
    items = batch * tiles
    pdt = launch.cdt(energy)
    with launch.launch_device(x):
        _mala_accept_kernel[launch.grid(x, items, 1, True)](
            x, x_prop, energy, energy_prop, log_q_fwd, log_q_rev, accepted, state, batch, d, tiles, items,
            PDT=pdt, BIG=launch.big(x.numel() + items, block), BLOCK=block,
            num_warps=launch.warps(block, x.dtype), enable_fp_fusion=False)
