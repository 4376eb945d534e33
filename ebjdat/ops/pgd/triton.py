"""pgd_step's and pgd_init's Triton kernels and launches (host side: triton_launch.py;
device helpers, Philox included: triton_device.py). Signatures and math: pgd/spec.py.

The l2 ops work per sample: a sample is cut into chunks (``l2_plan``), a program per
chunk; with one chunk per sample a single launch, with more a launch of chunk sums into
scratch and one that combines them and writes.
"""
import torch
import triton
import triton.language as tl

from .. import triton_launch as launch
from ..interpreter import interpreting
from ..triton_device import (
    advance,
    block_at,
    block_offsets,
    clamp,
    div,
    logical,
    noise_at,
    noise_run,
    philox_at,
    sqrt,
    store,
    uniform,
    uniform_at,
    uniform_run,
)

_L2_TINY = tl.constexpr(1e-10)  # added to ||grad|| in pgd l2, as in the specification


@triton.jit
def _pgd_linf_kernel(x_ptr, g_ptr, xo_ptr, numel,
                     alpha: tl.float64, eps: tl.float64, lo: tl.float64, hi: tl.float64,
                     CDT: tl.constexpr, HAS_EPS: tl.constexpr, BIG: tl.constexpr,
                     BLOCK: tl.constexpr):
    """v = x + alpha * sign(g); v = xo + clamp(v - xo, -eps, eps) if HAS_EPS; clamp(lo, hi)."""
    offs, mask = block_offsets(numel, BIG, BLOCK)
    g = tl.load(g_ptr + offs, mask=mask).to(CDT)
    sign = (g > 0).to(CDT) - (g < 0).to(CDT)  # torch.sign: 0 for +-0 and NaN
    v = tl.load(x_ptr + offs, mask=mask).to(CDT) + tl.full((), alpha, CDT) * sign
    if HAS_EPS:
        xo = tl.load(xo_ptr + offs, mask=mask).to(CDT)
        e = tl.full((), eps, CDT)
        v = xo + clamp(v - xo, -e, e)
    store(x_ptr + offs, clamp(v, tl.full((), lo, CDT), tl.full((), hi, CDT)), mask)


@triton.jit
def _l2_sums(x_ptr, g_ptr, xo_ptr, lo, hi, CDT: tl.constexpr, HAS_EPS: tl.constexpr,
             BLOCK: tl.constexpr):
    """(sum g^2, sum (x - xo) g, sum (x - xo)^2) over elements [lo, hi): one read of each."""
    gg = tl.zeros([BLOCK], CDT)
    dg = tl.zeros([BLOCK], CDT)
    dd = tl.zeros([BLOCK], CDT)
    for start in range(lo, hi, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < hi
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(CDT)
        gg += g * g
        if HAS_EPS:
            d = tl.load(x_ptr + offs, mask=mask, other=0.0).to(CDT) - \
                tl.load(xo_ptr + offs, mask=mask, other=0.0).to(CDT)
            dg += d * g
            dd += d * d
    return tl.sum(gg, axis=0), tl.sum(dg, axis=0), tl.sum(dd, axis=0)


@triton.jit
def _l2_scalars(gg, dg, dd, alpha, eps, CDT: tl.constexpr, HAS_EPS: tl.constexpr):
    """(gn, f) from a sample's sums: gn = sqrt(gg) + 1e-10; ||d||^2 = dd + 2 a dg + a^2 gg
    with a = alpha / gn (kernels/pgd.cuh: the expansion that saves a pass), f = min(1, eps / ||d||)."""
    gn = sqrt(gg) + tl.full((), _L2_TINY, CDT)
    f = tl.full((), 1.0, CDT)
    if HAS_EPS:
        a = div(tl.full((), alpha, CDT), gn)
        dn2 = dd + (a + a) * dg
        dn2 = tl.where(a != 0.0, dn2 + (a * a) * gg, dn2)   # a = 0: no 0 * inf
        dn = sqrt(tl.where(dn2 < 0.0, 0.0, dn2))
        e = tl.full((), eps, CDT)
        f = tl.where(dn <= e, tl.full((), 1.0, CDT), div(e, dn))  # NaN dn -> NaN, as torch
    return gn, f


@triton.jit
def _l2_write(x_ptr, g_ptr, xo_ptr, lo, hi, gn, f, alpha, lo_clamp, hi_clamp,
              CDT: tl.constexpr, HAS_EPS: tl.constexpr, BLOCK: tl.constexpr):
    """x <- clamp(xo + (x + alpha * (g / gn) - xo) * f, lo, hi) over elements [lo, hi)."""
    a = tl.full((), alpha, CDT)
    lo_c = tl.full((), lo_clamp, CDT)
    hi_c = tl.full((), hi_clamp, CDT)
    for start in range(lo, hi, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < hi
        v = tl.load(x_ptr + offs, mask=mask).to(CDT) + a * div(tl.load(g_ptr + offs, mask=mask).to(CDT), gn)
        if HAS_EPS:
            xo = tl.load(xo_ptr + offs, mask=mask).to(CDT)
            v = xo + (v - xo) * f
        store(x_ptr + offs, clamp(v, lo_c, hi_c), mask)


@triton.jit
def _l2_chunk(D, chunk, splits, BIG: tl.constexpr):
    """(lo, hi) of this program's chunk: program k = b * splits + c takes chunk c of sample b."""
    k = tl.program_id(0)
    if BIG:
        k = k.to(tl.int64)
    b = k // splits
    lo = b * D + (k - b * splits) * chunk
    return lo, tl.minimum(lo + chunk, b * D + D)


@triton.jit
def _pgd_l2_kernel(x_ptr, g_ptr, xo_ptr, D,
                   alpha: tl.float64, eps: tl.float64, lo: tl.float64, hi: tl.float64,
                   CDT: tl.constexpr, HAS_EPS: tl.constexpr, BIG: tl.constexpr,
                   BLOCK: tl.constexpr):
    """One program per sample b over its D elements [b*D, (b+1)*D): the sums, then the write.

    gn = ||g|| + 1e-10;  v = x + alpha * (g / gn);
    if HAS_EPS: d = v - xo, dn = ||d||, v = xo + d * (1 if dn <= eps else eps / dn);
    x <- clamp(v, lo, hi).  Nothing is stored before the norms are known.
    """
    start, end = _l2_chunk(D, D, 1, BIG)
    gg, dg, dd = _l2_sums(x_ptr, g_ptr, xo_ptr, start, end, CDT, HAS_EPS, BLOCK)
    gn, f = _l2_scalars(gg, dg, dd, alpha, eps, CDT, HAS_EPS)
    _l2_write(x_ptr, g_ptr, xo_ptr, start, end, gn, f, alpha, lo, hi, CDT, HAS_EPS, BLOCK)


@triton.jit
def _pgd_l2_partial_kernel(x_ptr, g_ptr, xo_ptr, part_ptr, D, chunk, splits,
                           CDT: tl.constexpr, HAS_EPS: tl.constexpr, BIG: tl.constexpr,
                           BLOCK: tl.constexpr):
    """Samples in several chunks, first launch: program k's three sums to part[3k .. 3k + 2]."""
    start, end = _l2_chunk(D, chunk, splits, BIG)
    gg, dg, dd = _l2_sums(x_ptr, g_ptr, xo_ptr, start, end, CDT, HAS_EPS, BLOCK)
    k = tl.program_id(0).to(tl.int64)
    tl.store(part_ptr + 3 * k, gg)
    tl.store(part_ptr + 3 * k + 1, dg)
    tl.store(part_ptr + 3 * k + 2, dd)


@triton.jit
def _pgd_l2_finish_kernel(x_ptr, g_ptr, xo_ptr, part_ptr, D, chunk, splits,
                          alpha: tl.float64, eps: tl.float64, lo: tl.float64, hi: tl.float64,
                          CDT: tl.constexpr, HAS_EPS: tl.constexpr, BIG: tl.constexpr,
                          BLOCK: tl.constexpr, SPLITS_BLOCK: tl.constexpr):
    """Second launch: program k adds up its sample's chunk sums, then writes its chunk."""
    k = tl.program_id(0).to(tl.int64)
    first = 3 * (k // splits) * splits
    gg = tl.zeros([SPLITS_BLOCK], CDT)
    dg = tl.zeros([SPLITS_BLOCK], CDT)
    dd = tl.zeros([SPLITS_BLOCK], CDT)
    for c0 in range(0, splits, SPLITS_BLOCK):
        c = c0 + tl.arange(0, SPLITS_BLOCK)
        mask = c < splits
        gg += tl.load(part_ptr + first + 3 * c, mask=mask, other=0.0)
        dg += tl.load(part_ptr + first + 3 * c + 1, mask=mask, other=0.0)
        dd += tl.load(part_ptr + first + 3 * c + 2, mask=mask, other=0.0)
    gn, f = _l2_scalars(tl.sum(gg, axis=0), tl.sum(dg, axis=0), tl.sum(dd, axis=0), alpha, eps, CDT, HAS_EPS)
    start, end = _l2_chunk(D, chunk, splits, BIG)
    _l2_write(x_ptr, g_ptr, xo_ptr, start, end, gn, f, alpha, lo, hi, CDT, HAS_EPS, BLOCK)


@triton.jit
def _init_linf_kernel(x_ptr, xo_ptr, state_ptr, numel, C, HW, D,
                      eps: tl.float64, lo: tl.float64, hi: tl.float64,
                      CDT: tl.constexpr, CHANNELS_LAST: tl.constexpr, BIG: tl.constexpr,
                      BLOCK: tl.constexpr):
    """x[m] <- clamp(xo + eps * (2 u - 1), lo, hi), u the uniform of logical(m) (philox.py).
    Program p takes blocks p, p + P, ... (a grid of a few programs per SM, as a noisy sgld)."""
    seed = tl.load(state_ptr)
    offset = tl.load(state_ptr + 1)
    for blk in range(tl.program_id(0), tl.cdiv(numel, BLOCK), tl.num_programs(0)):
        offs, mask, start = block_at(blk, numel, BIG, BLOCK)
        if CHANNELS_LAST:
            u = uniform_at(seed, offset, logical(offs, C, HW, D, CHANNELS_LAST).to(tl.int64))
        else:
            u = uniform_run(seed, offset, start, BLOCK)
        xo = tl.load(xo_ptr + offs, mask=mask).to(CDT)
        v = xo + tl.full((), eps, CDT) * (u.to(CDT) * 2.0 - 1.0)
        store(x_ptr + offs, clamp(v, tl.full((), lo, CDT), tl.full((), hi, CDT)), mask)
    advance(state_ptr, offset, (numel + 3) // 4)


@triton.jit
def _init_l2_z(seed, offset, offs, start, C, HW, D, CHANNELS_LAST: tl.constexpr, RUN: tl.constexpr,
               BLOCK: tl.constexpr, SFU: tl.constexpr):
    """The normals of memory indices offs = start + arange(BLOCK): RUN (logical order, start
    a multiple of 4) one Philox call per four elements; otherwise one per element."""
    if RUN:
        return noise_run(seed, offset, start, BLOCK, SFU)
    return noise_at(seed, offset, logical(offs, C, HW, D, CHANNELS_LAST).to(tl.int64), SFU)


@triton.jit
def _init_l2_sumsq(seed, offset, lo, hi, C, HW, D, CDT: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                   RUN: tl.constexpr, BLOCK: tl.constexpr, SFU: tl.constexpr):
    """sum z^2 over the memory indices [lo, hi) of one sample."""
    acc = tl.zeros([BLOCK], CDT)
    for start in range(lo, hi, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = _init_l2_z(seed, offset, offs, start, C, HW, D, CHANNELS_LAST, RUN, BLOCK, SFU).to(CDT)
        acc += tl.where(offs < hi, z * z, 0.0)
    return tl.sum(acc, axis=0)


@triton.jit
def _init_l2_write(x_ptr, xo_ptr, seed, offset, lo, hi, scale, lo_c, hi_c, C, HW, D,
                   CDT: tl.constexpr, CHANNELS_LAST: tl.constexpr, RUN: tl.constexpr,
                   BLOCK: tl.constexpr, SFU: tl.constexpr):
    """x <- clamp(xo + z * scale, lo_c, hi_c) over [lo, hi), z drawn again as in the sum."""
    lo_c = tl.full((), lo_c, CDT)
    hi_c = tl.full((), hi_c, CDT)
    for start in range(lo, hi, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < hi
        z = _init_l2_z(seed, offset, offs, start, C, HW, D, CHANNELS_LAST, RUN, BLOCK, SFU).to(CDT)
        xo = tl.load(xo_ptr + offs, mask=mask).to(CDT)
        store(x_ptr + offs, clamp(xo + z * scale, lo_c, hi_c), mask)


@triton.jit
def _init_l2_scale(seed, offset, numel, splits, zsq, eps, CDT: tl.constexpr):
    """(radius / ||z||) * eps of this program's sample b = program // splits, radius = u(r0)
    of counter offset + ceil(numel / 4) + b."""
    b = tl.program_id(0).to(tl.int64) // splits
    q0, _q1, _q2, _q3 = philox_at(seed, offset + (numel + 3) // 4 + b)
    return div(uniform(q0).to(CDT), sqrt(zsq)) * tl.full((), eps, CDT)


@triton.jit
def _init_l2_kernel(x_ptr, xo_ptr, state_ptr, numel, C, HW, D, chunk, splits,
                    eps: tl.float64, lo: tl.float64, hi: tl.float64,
                    CDT: tl.constexpr, CHANNELS_LAST: tl.constexpr, RUN: tl.constexpr, BIG: tl.constexpr,
                    BLOCK: tl.constexpr, SFU: tl.constexpr):
    """One program per sample b (splits == 1): z = N(0, I), the normals of its elements'
    logical indices; radius = u(r0) of counter offset + ceil(numel / 4) + b;
    x <- clamp(xo + z * ((radius / ||z||) * eps), lo, hi). z is drawn twice (norm, write).
    RUN (logical order and D % 4 == 0, so every block starts at a multiple of 4): one
    Philox call per four elements; otherwise one per element."""
    seed = tl.load(state_ptr)
    offset = tl.load(state_ptr + 1)
    start, end = _l2_chunk(D, chunk, splits, BIG)
    zsq = _init_l2_sumsq(seed, offset, start, end, C, HW, D, CDT, CHANNELS_LAST, RUN, BLOCK, SFU)
    scale = _init_l2_scale(seed, offset, numel, splits, zsq, eps, CDT)
    _init_l2_write(x_ptr, xo_ptr, seed, offset, start, end, scale, lo, hi, C, HW, D,
                   CDT, CHANNELS_LAST, RUN, BLOCK, SFU)
    advance(state_ptr, offset, (numel + 3) // 4 + numel // D)


@triton.jit
def _init_l2_partial_kernel(state_ptr, part_ptr, numel, C, HW, D, chunk, splits,
                            CDT: tl.constexpr, CHANNELS_LAST: tl.constexpr, RUN: tl.constexpr,
                            BIG: tl.constexpr, BLOCK: tl.constexpr, SFU: tl.constexpr):
    """Samples in several chunks, first launch: program k's sum of z^2 to part[k]; the
    generator is read, not advanced (the second launch does)."""
    seed = tl.load(state_ptr)
    offset = tl.load(state_ptr + 1)
    start, end = _l2_chunk(D, chunk, splits, BIG)
    zsq = _init_l2_sumsq(seed, offset, start, end, C, HW, D, CDT, CHANNELS_LAST, RUN, BLOCK, SFU)
    tl.store(part_ptr + tl.program_id(0).to(tl.int64), zsq)


@triton.jit
def _init_l2_finish_kernel(x_ptr, xo_ptr, state_ptr, part_ptr, numel, C, HW, D, chunk, splits,
                           eps: tl.float64, lo: tl.float64, hi: tl.float64,
                           CDT: tl.constexpr, CHANNELS_LAST: tl.constexpr, RUN: tl.constexpr,
                           BIG: tl.constexpr, BLOCK: tl.constexpr, SFU: tl.constexpr,
                           SPLITS_BLOCK: tl.constexpr):
    """Second launch: program k adds up its sample's chunk sums, writes its chunk, and
    counts itself on the generator."""
    seed = tl.load(state_ptr)
    offset = tl.load(state_ptr + 1)
    k = tl.program_id(0).to(tl.int64)
    first = (k // splits) * splits
    acc = tl.zeros([SPLITS_BLOCK], CDT)
    for c0 in range(0, splits, SPLITS_BLOCK):
        c = c0 + tl.arange(0, SPLITS_BLOCK)
        acc += tl.load(part_ptr + first + c, mask=c < splits, other=0.0)
    scale = _init_l2_scale(seed, offset, numel, splits, tl.sum(acc, axis=0), eps, CDT)
    start, end = _l2_chunk(D, chunk, splits, BIG)
    _init_l2_write(x_ptr, xo_ptr, seed, offset, start, end, scale, lo, hi, C, HW, D,
                   CDT, CHANNELS_LAST, RUN, BLOCK, SFU)
    advance(state_ptr, offset, (numel + 3) // 4 + numel // D)


# ----------------------------------------------------------------------------- host side

def _l2_block(d: int, dtype: torch.dtype, noise: bool = False):
    """(BLOCK, num_warps) of the per-sample kernels: the sample in chunks of at most 2048
    elements, up to 8 per thread; the l2 random start (``noise``: a Philox call per
    element) half of that; fp64 a quarter of those (more values per thread spill
    registers, as the sm_90 compile report showed)."""
    cap = (512 if dtype == torch.float64 else 2048) // (2 if noise else 1)
    block = min(cap, max(128, triton.next_power_of_2(d)))
    return block, (4 if block <= 1024 else 8)


def pgd_step(x, grad, x_orig, alpha, eps, norm, lo, hi, layout=None):
    """One PGD ascent step along grad, projected onto the eps-ball around x_orig, clamped."""
    n = x.numel()
    has_eps = eps is not None
    e = float(eps) if has_eps else 0.0
    with launch.launch_device(x):
        if norm == "linf":
            block, warps = launch.elementwise(x, n)
            _pgd_linf_kernel[(triton.cdiv(n, block),)](
                x, grad, x_orig, n, float(alpha), e, float(lo), float(hi),
                CDT=launch.cdt(x), HAS_EPS=has_eps, BIG=launch.big(n, block), BLOCK=block,
                num_warps=warps, enable_fp_fusion=False)
        else:
            _pgd_step_l2(x, grad, x_orig, float(alpha), has_eps, e, float(lo), float(hi))


# programs an l2 step launch aims at (8 per SM on 132 SMs): a few large samples are cut
# into chunks so that they still fill the GPU
_L2_PROGRAMS = 1024


def l2_plan(batch: int, d: int, dtype: torch.dtype, noise: bool = False) -> tuple[int, int, int, int]:
    """(chunk, splits, BLOCK, num_warps) of the l2 step (and, ``noise``, of the l2 random
    start): each of ``batch`` samples of d elements in ``splits`` chunks of ``chunk``
    elements (a multiple of BLOCK, the last one shorter), one program each."""
    per = -(-d // -(-_L2_PROGRAMS // batch))   # elements per program, for the programs wanted
    block, _ = _l2_block(per, dtype, noise)
    chunk = min(d, -(-per // block) * block)
    # a 16-byte vector per thread at least (fewer warps for small blocks), at most 8 warps
    return chunk, -(-d // chunk), block, max(1, min(8, block // (32 * launch.VECTOR[dtype])))


def _pgd_step_l2(x, grad, x_orig, alpha, has_eps, eps, lo, hi):
    b = x.shape[0]
    d = x.numel() // b
    chunk, splits, block, warps = l2_plan(b, d, x.dtype)
    kw = dict(CDT=launch.cdt(x), HAS_EPS=has_eps, BIG=launch.big(x.numel(), block), BLOCK=block, num_warps=warps,
              enable_fp_fusion=False)
    if splits == 1:
        _pgd_l2_kernel[(b,)](x, grad, x_orig, d, alpha, eps, lo, hi, **kw)
        return
    part = torch.empty(3 * b * splits, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32,
                       device=x.device)
    _pgd_l2_partial_kernel[(b * splits,)](x, grad, x_orig, part, d, chunk, splits, **kw)
    _pgd_l2_finish_kernel[(b * splits,)](x, grad, x_orig, part, d, chunk, splits, alpha, eps, lo, hi, **kw,
                                         SPLITS_BLOCK=min(1024, max(16, triton.next_power_of_2(splits))))


def pgd_init(x, x_orig, state, eps, norm, lo, hi, layout=None):
    """Random start around x_orig (uniform in the linf box, or torchattacks' l2 ball), clamped;
    advances the generator by ceil(x.numel() / 4) counters (l2: plus one per sample)."""
    n = x.numel()
    c, hw, d, cl = launch.layout_args(layout)
    with launch.launch_device(x):
        if norm == "linf":
            block, warps = launch.elementwise(x, n)
            _init_linf_kernel[launch.grid(x, n, block, True)](
                x, x_orig, state, n, c, hw, d, float(eps), float(lo), float(hi),
                CDT=launch.cdt(x), CHANNELS_LAST=cl, BIG=launch.big(n, block), BLOCK=block,
                num_warps=warps, enable_fp_fusion=False)
        else:
            _pgd_init_l2(x, x_orig, state, n, c, hw, cl, float(eps), float(lo), float(hi))


def _pgd_init_l2(x, x_orig, state, n, c, hw, cl, eps, lo, hi):
    """The l2 random start in the l2 step's plan: one program per sample, or a launch of
    chunk sums of z^2 and one that combines them and writes."""
    b = x.shape[0]
    d = n // b
    chunk, splits, block, warps = l2_plan(b, d, x.dtype, noise=True)
    kw = dict(CDT=launch.cdt(x), CHANNELS_LAST=cl, RUN=not cl and d % 4 == 0, BIG=launch.big(n, block), BLOCK=block,
              SFU=not interpreting(), num_warps=warps, enable_fp_fusion=False)
    if splits == 1:
        _init_l2_kernel[(b,)](x, x_orig, state, n, c, hw, d, chunk, 1, eps, lo, hi, **kw)
        return
    part = torch.empty(b * splits, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32,
                       device=x.device)
    _init_l2_partial_kernel[(b * splits,)](state, part, n, c, hw, d, chunk, splits, **kw)
    _init_l2_finish_kernel[(b * splits,)](x, x_orig, state, part, n, c, hw, d, chunk, splits, eps, lo, hi, **kw,
                                          SPLITS_BLOCK=min(1024, max(16, triton.next_power_of_2(splits))))
