"""Device-side building blocks of the Triton kernels (each op family's triton.py): Philox4x32-10
and the noise it feeds (exactly as ``philox.py`` specifies), the row-major index of a
channels_last element, IEEE-rounded sqrt and division, the one-rounding store, and the
generator advance that ends every noisy launch.

Noise in logical order draws one Philox call per four lanes, its outputs interleaved
(``noise_run``, ``uniform_run``); gathered (channels_last) orders draw a call per element
(``noise_at``, ``uniform_at``); both give the same value for the same logical element.
"""
import triton
import triton.language as tl
from triton.language.extra import libdevice

from . import philox

# Philox4x32-10 and noise constants (see philox.py); tl.constexpr so kernels may read them.
_M0 = tl.constexpr(philox.PHILOX_M0)
_M1 = tl.constexpr(philox.PHILOX_M1)
_W0 = tl.constexpr(philox.PHILOX_W0)
_W1 = tl.constexpr(philox.PHILOX_W1)
_TWO_PI = tl.constexpr(philox.TWO_PI_F32)


@triton.jit
def philox(k0, k1, c0, c1):
    """Philox4x32-10 of counters (c0, c1, 0, 0) under key (k0, k1): uint32 in, 4 uint32 out."""
    c2 = tl.zeros_like(c0)
    c3 = tl.zeros_like(c0)
    for r in tl.static_range(10):
        if r > 0:  # the key is bumped before every round but the first
            k0 = k0 + _W0
            k1 = k1 + _W1
        hi0 = tl.umulhi(c0, _M0)
        lo0 = c0 * _M0  # uint32 product wraps: the low word
        hi1 = tl.umulhi(c2, _M1)
        lo1 = c2 * _M1
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


@triton.jit
def philox_at(seed, counter):
    """Philox words of the int64 counters ``counter`` under the int64 ``seed``."""
    # int64 -> uint32 truncates: (lo32, hi32) of both; >> is arithmetic, the truncation
    # keeps exactly the high word's bits, as philox.py's (x >> 32) & MASK32
    return philox(seed.to(tl.uint32), (seed >> 32).to(tl.uint32),
                   counter.to(tl.uint32), (counter >> 32).to(tl.uint32))


@triton.jit
def uniform(r):
    """fp32 uniform in (0, 1) from a uint32 word: ((r >> 9) + 0.5) * 2**-23, exact, as
    (1 + (r >> 9) * 2**-23) - (1 - 2**-24) (kernels/philox.cuh's uniform01)."""
    return ((r >> 9) | 0x3F800000).to(tl.float32, bitcast=True) - 0.99999994039535522


@triton.jit
def log_unit(u):
    """ln(u) for the uniforms u in [2**-24, 1): kernels/philox.cuh's log_unit, the same
    fmas and constants (within 1e-7 relative of ln on every such u)."""
    bits = u.to(tl.uint32, bitcast=True)
    e_bits = (bits - 0x3F3504F3) & 0xFF800000
    m = (bits - e_bits).to(tl.float32, bitcast=True)
    e = (e_bits.to(tl.int32, bitcast=True) >> 23).to(tl.float32)
    f = m - 1.0
    p = tl.fma(f, 0.08506953716278076, -0.14197471737861633)
    p = tl.fma(p, f, 0.14950978755950928)
    p = tl.fma(p, f, -0.165879487991333)
    p = tl.fma(p, f, 0.19960597157478333)
    p = tl.fma(p, f, -0.250009685754776)
    p = tl.fma(p, f, 0.33333972096443176)
    r = tl.fma(f * f, tl.fma(f, p, -0.5), f)
    return tl.fma(e, 0.693147182464599609375, r)


@triton.jit
def radius_theta(ra, rb, SFU: tl.constexpr):
    """Box-Muller's radius sqrt(-2 ln u(ra)) and angle (u(rb) - 0.5) * fp32(2 pi). SFU
    (compiled for a GPU): the square root as r2 * rsqrt(r2) on the special-function unit,
    as the CUDA kernels do; the interpreter takes the IEEE one."""
    r2 = -2.0 * log_unit(uniform(ra))
    theta = (uniform(rb) - 0.5) * _TWO_PI
    if SFU:
        return r2 * libdevice.rsqrt(r2), theta
    return tl.sqrt_rn(r2), theta


@triton.jit
def cos_sin(theta, SFU: tl.constexpr):
    """cos and sin of theta in [-pi, pi]: the special-function unit's (within 2**-21.4)
    when compiled for a GPU, as the CUDA kernels; libm's in the interpreter."""
    if SFU:
        return libdevice.fast_cosf(theta), libdevice.fast_sinf(theta)
    return tl.cos(theta), tl.sin(theta)


@triton.jit
def pair(ra, rb, SFU: tl.constexpr):
    """The Box-Muller pair of two uint32 words: (rho cos theta, rho sin theta) in fp32."""
    rho, theta = radius_theta(ra, rb, SFU)
    c, s = cos_sin(theta, SFU)
    return rho * c, rho * s


@triton.jit
def interleave4(a0, a1, a2, a3):
    """(BLOCK / 4,) x 4 -> (BLOCK,): a0[k], a1[k], a2[k], a3[k] at 4k .. 4k + 3."""
    return tl.interleave(tl.interleave(a0, a2), tl.interleave(a1, a3))


@triton.jit
def noise_at(seed, offset, idx, SFU: tl.constexpr):
    """fp32 N(0, 1) of the int64 logical elements idx of a call at offset (any order):
    element i takes output i % 4 of counter offset + i // 4 (philox.py): the pair's words
    are selected first, so each element pays one log and one square root."""
    r0, r1, r2, r3 = philox_at(seed, offset + idx // 4)
    j = idx % 4
    second = j >= 2
    rho, theta = radius_theta(tl.where(second, r2, r0), tl.where(second, r3, r1), SFU)
    c, s = cos_sin(theta, SFU)   # the same functions as pair: a layout never changes a bit of noise
    return rho * tl.where((j % 2) == 1, s, c)


@triton.jit
def noise_run(seed, offset, first, BLOCK: tl.constexpr, SFU: tl.constexpr):
    """fp32 N(0, 1) of the BLOCK consecutive logical elements first, first + 1, ...
    (first % 4 == 0): one Philox call and one pair of logs and square roots per 4."""
    r0, r1, r2, r3 = philox_at(seed, offset + first // 4 + tl.arange(0, BLOCK // 4).to(tl.int64))
    c0, s0 = pair(r0, r1, SFU)
    c1, s1 = pair(r2, r3, SFU)
    return interleave4(c0, s0, c1, s1)


@triton.jit
def uniform_at(seed, offset, idx):
    """fp32 uniforms u(r_(i % 4)) of counter offset + i // 4 of the logical elements idx."""
    r0, r1, r2, r3 = philox_at(seed, offset + idx // 4)
    j = idx % 4
    return uniform(tl.where(j < 2, tl.where(j == 0, r0, r1), tl.where(j == 2, r2, r3)))


@triton.jit
def uniform_run(seed, offset, first, BLOCK: tl.constexpr):
    """fp32 uniforms of the BLOCK consecutive logical elements from first (first % 4 == 0)."""
    r0, r1, r2, r3 = philox_at(seed, offset + first // 4 + tl.arange(0, BLOCK // 4).to(tl.int64))
    return interleave4(uniform(r0), uniform(r1), uniform(r2), uniform(r3))


@triton.jit
def logical(s, C, HW, D, CHANNELS_LAST: tl.constexpr):
    """Row-major logical index of memory index s (identity unless channels_last).

    channels_last: inside a sample of D = C*H*W elements memory runs (h, w, c), so
    s = n*D + hw*C + c maps to n*D + c*HW + hw.
    """
    if CHANNELS_LAST:
        r = s % D
        return (s - r) + (r % C) * HW + r // C
    else:
        return s


@triton.jit
def clamp(v, lo, hi):
    """torch.clamp: keeps NaN, identity for +-inf bounds (no min/max NaN subtleties)."""
    return tl.where(v < lo, lo, tl.where(v > hi, hi, v))


@triton.jit
def sqrt(v):
    """Correctly rounded square root, as torch's (fp64 sqrt is always IEEE)."""
    if v.dtype == tl.float64:
        return tl.sqrt(v)
    else:
        return tl.sqrt_rn(v)


@triton.jit
def div(a, b):
    """Correctly rounded a / b (fp32 ``/`` in Triton is the approximate div.full)."""
    a, b = tl.broadcast(a, b)
    if a.dtype == tl.float64:
        return a / b
    else:
        return tl.div_rn(a, b)


@triton.jit
def to_bf16(v):
    """fp32 -> bf16 rounding to nearest even, in integer ops: the same bits on GPUs and in
    the interpreter (whose float cast truncates); NaN becomes 0x7FC0 as in torch."""
    b = v.to(tl.uint32, bitcast=True)
    r = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    r = tl.where(v != v, 0x7FC0, r)
    return r.to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def store(ptrs, v, mask):
    """Store v rounded once to the pointee dtype."""
    ty = ptrs.dtype.element_ty
    if ty == tl.bfloat16:
        tl.store(ptrs, to_bf16(v.to(tl.float32)), mask=mask)
    else:
        tl.store(ptrs, v.to(ty), mask=mask)


@triton.jit
def block_offsets(numel, BIG: tl.constexpr, BLOCK: tl.constexpr):
    """Memory indices of this program's block and their in-bounds mask."""
    offs, mask, _start = block_at(tl.program_id(0), numel, BIG, BLOCK)
    return offs, mask


@triton.jit
def block_at(blk, numel, BIG: tl.constexpr, BLOCK: tl.constexpr):
    """Memory indices of block blk, their in-bounds mask, and the block's first index."""
    if BIG:  # numel + BLOCK may exceed int32
        blk = blk.to(tl.int64)
    start = blk * BLOCK
    offs = start + tl.arange(0, BLOCK)
    return offs, offs < numel, start


@triton.jit
def counted(done, tag, grid):
    """(the done-word after one finished program, whether it advances the offset): the
    CUDA kernels' count_done (kernels/philox.cuh). done = (tag << 32) | count; a count of
    another tag is stale and dropped; the program that completes the count advances."""
    seen = tl.where(((done >> 32) & 0xFFFFFFFF) == tag, done & 0xFFFFFFFF, 0)
    last = seen + 1 >= grid
    return (tag << 32) | tl.where(last, 0, seen + 1), last


@triton.jit
def advance(state_ptr, offset, counters):
    """Count this program done; the one that completes the count moves the offset by
    ``counters``. Every program read seed and offset at its start (no wait before its
    loads); the barrier orders those reads before this count. Cannot wedge: a count left
    by overlapping launches carries a tag the next offset does not match."""
    tl.debug_barrier()
    tag = offset & 0xFFFFFFFF
    grid = tl.num_programs(0).to(tl.int64)
    old = tl.atomic_add(state_ptr + 2, 0, sem="acquire")   # an atomic read
    new, last = counted(old, tag, grid)
    seen = tl.atomic_cas(state_ptr + 2, old, new, sem="acq_rel")
    while seen != old:
        old = seen
        new, last = counted(old, tag, grid)
        seen = tl.atomic_cas(state_ptr + 2, old, new, sem="acq_rel")
    tl.store(state_ptr + 1, offset + counters, mask=last)
