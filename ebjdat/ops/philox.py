"""Philox4x32-10 and the noise it feeds, written in torch integer and float ops.

This file is the specification of ebjdat's random numbers; the Triton kernels
(``ebjdat/ops/triton_device.py``) and the CUDA kernels (``kernels/philox.cuh``) compute the
same functions.

* Key: the 64-bit seed, ``k0 = seed & 0xFFFFFFFF``, ``k1 = seed >> 32``.
* One Philox call serves four consecutive elements. Element ``i`` (row-major logical
  index) of a call at offset ``o`` uses counter ``c = o + i // 4`` (64 bits; words
  ``(c & 0xFFFFFFFF, c >> 32, 0, 0)``) and its output ``j = i % 4``; the call advances the
  offset by ``ceil(n / 4)`` counters (``counters_for(n)``).
* Output: four 32-bit words ``r0..r3`` (Random123's Philox4x32 with 10 rounds).
* Uniform of element i: ``u(r_j)``, ``u(r) = ((r >> 9) + 0.5) * 2**-23``, in (0, 1), exact in fp32.
* Normal of element i (Box-Muller on the pair ``p = j // 2``: words ``(r_2p, r_2p+1)``):
  ``rho = sqrt(-2 log u(r_2p))``, ``theta = 2*pi*(u(r_2p+1) - 0.5)``; ``z = rho cos(theta)``
  for even j, ``rho sin(theta)`` for odd j (both branches: no word is wasted), in fp32.
  The integer words are bit-identical in every backend; ``z`` differs between backends
  only through ``log``, ``sqrt``, ``cos`` and ``sin`` (see ``NOISE_ATOL``).
* The l2 random start also needs one radius per sample b: ``u(r0)`` of counter
  ``o + ceil(n / 4) + b``, after the elements' counters; that call advances the offset by
  ``ceil(n / 4) + B``.
"""
from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
TWO_PI_F32 = 6.2831854820251465  # float32(2*pi): every backend multiplies by this value
INV_2_23 = 1.0 / 8388608.0
# |z_backend - z_torch| bound on |z| <= 5.8 (u >= 2**-24). The CUDA kernels and the Triton
# kernels on a GPU take ln from log_unit (within 1e-7 relative, checked on every u by
# tests/test_philox_log.py), sin and cos from the special-function unit (within 2**-21.4 on
# [-pi, pi], so at most 2.2e-6 in z) and the square root as r2 * rsqrt(r2) (2**-22 relative);
# the host loops and the interpreter take sin, cos and sqrt from libm.
NOISE_ATOL = 1e-5


def _mulhilo(m: int, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of the 64-bit product m * c, for 0 <= c < 2**32, in int64."""
    t = m * (c & 0xFFFF)                       # < 2**48
    u = m * (c >> 16)                          # < 2**48
    s = t + ((u & 0xFFFF) << 16)               # < 2**49: no int64 overflow anywhere
    return (u >> 16) + (s >> 32), s & MASK32


def philox4x32_10(k0, k1, c0, c1, c2, c3) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 (Random123) of 32-bit words held in int64 tensors or ints."""
    for r in range(10):
        if r:
            k0 = (k0 + PHILOX_W0) & MASK32
            k1 = (k1 + PHILOX_W1) & MASK32
        hi0, lo0 = _mulhilo(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def philox4x32(seed: torch.Tensor, counter: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 of 64-bit counters ``(c, 0)`` under the 64-bit key ``seed``.

    seed: int64 scalar tensor; counter: int64 tensor (any shape), values in [0, 2**63).
    Returns (r0, r1, r2, r3): int64 tensors of counter's shape holding 32-bit words.
    """
    zero = torch.zeros_like(counter)
    return philox4x32_10(seed & MASK32, (seed >> 32) & MASK32,
                         counter & MASK32, (counter >> 32) & MASK32, zero, zero)


def uniform(r: torch.Tensor) -> torch.Tensor:
    """fp32 uniform in (0, 1) from 32-bit words: ((r >> 9) + 0.5) * 2**-23, exact."""
    return ((r >> 9).to(torch.float32) + 0.5) * INV_2_23


def counters_for(n: int) -> int:
    """Counters a call of n elements draws: ceil(n / 4)."""
    return (n + 3) // 4


OFFSET_MAX = 2**63 - 1   # the int64 offset never wraps to a negative counter


def advance_(state: torch.Tensor, k: int) -> None:
    """state[1] += k, the k counters a call drew. On the CPU (a host read costs nothing
    there) a call that would carry the offset past OFFSET_MAX is refused before it writes;
    on a GPU, and inside a torch.compile trace, the offset is not read back (that would
    synchronise, or break the graph): from any offset that ``PhiloxGenerator`` accepts (at
    most 2**62) the wrap is 2**62 counters away."""
    if (state.device.type == "cpu" and not torch.compiler.is_compiling()
            and int(state[1]) > OFFSET_MAX - k):
        raise ValueError(f"the generator's Philox offset {int(state[1])} would pass 2**63 - 1 with this call's "
                         f"{k} counters; reseed the generator (manual_seed) before drawing more")
    state[1] += k


def counters(state: torch.Tensor, n: int) -> torch.Tensor:
    """The counters ``offset + arange(n)`` (n counters, not elements), on state's device."""
    return state[1] + torch.arange(n, dtype=torch.int64, device=state.device)


def _words(state: torch.Tensor, n: int) -> torch.Tensor:
    """(4 * ceil(n / 4),) int64: element i's word r_(i % 4) of counter offset + i // 4."""
    r = philox4x32(state[0], counters(state, counters_for(n)))
    return torch.stack(r, dim=1).reshape(-1)


def uniforms(state: torch.Tensor, n: int) -> torch.Tensor:
    """(n,) fp32 uniforms of a call's n elements at the state's offset (does not advance)."""
    return uniform(_words(state, n)[:n])


def normals(state: torch.Tensor, n: int) -> torch.Tensor:
    """(n,) fp32 N(0, 1) of a call's n elements at the state's offset (does not advance)."""
    r = philox4x32(state[0], counters(state, counters_for(n)))
    rho = [torch.sqrt(-2.0 * torch.log(uniform(r[p]))) for p in (0, 2)]
    theta = [(uniform(r[p]) - 0.5) * TWO_PI_F32 for p in (1, 3)]
    z = torch.stack([rho[0] * torch.cos(theta[0]), rho[0] * torch.sin(theta[0]),
                     rho[1] * torch.cos(theta[1]), rho[1] * torch.sin(theta[1])], dim=1)
    return z.reshape(-1)[:n]


def normal(state: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """fp32 N(0, 1) noise of ``shape`` at the generator state's offset (does not advance)."""
    n = 1
    for s in shape:
        n *= s
    return normals(state, n).reshape(shape)


def radii(state: torch.Tensor, n: int, b: int) -> torch.Tensor:
    """(b,) fp32 uniforms of the l2 random start's radii: u(r0) of counter
    offset + ceil(n / 4) + k for sample k, after a call's n elements."""
    r0 = philox4x32(state[0], state[1] + counters_for(n) + torch.arange(b, dtype=torch.int64,
                                                                      device=state.device))[0]
    return uniform(r0)
