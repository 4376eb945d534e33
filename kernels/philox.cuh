// Philox4x32-10 and the noise it feeds, exactly as ebjdat/ops/philox.py specifies.
//
// key (k0, k1) = (seed lo32, seed hi32); one Philox call serves four consecutive
// elements: logical element i of a call at offset o uses counter c = o + i / 4 (64 bits,
// words (c lo32, c hi32, 0, 0)) and output j = i % 4; a call advances the offset by
// ceil(n / 4). Normals: Box-Muller on the pair (r_2p, r_2p+1), p = j / 2, cos for even j,
// sin for odd j. The integer words are bit-identical to the torch specification; the normal
// differs only through log, sqrt, sin and cos (within ebjdat.ops.philox.NOISE_ATOL).
#pragma once

#include "common.cuh"
#include "dtype.cuh"

namespace ebjdat {

struct Philox4 { uint32_t r0, r1, r2, r3; };

EBJDAT_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  hi = __umulhi(a, b);
  lo = a * b;
#else
  const uint64_t p = (uint64_t)a * b;
  hi = (uint32_t)(p >> 32);
  lo = (uint32_t)p;
#endif
}

EBJDAT_HD Philox4 philox4x32(uint64_t seed, uint64_t counter) {
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    if (r) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(0xD2511F53u, c0, hi0, lo0);
    mulhilo32(0xCD9E8D57u, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  return Philox4{c0, c1, c2, c3};
}

// Uniform in (0, 1): ((r >> 9) + 0.5) * 2^-23, exact in fp32, computed as
// (1 + (r >> 9) * 2^-23) - (1 - 2^-24): the first term is the float with mantissa bits
// r >> 9 and exponent 0, and the difference, a multiple of 2^-24 below 1, is exact
// (three instructions instead of four: no integer-to-float conversion, no multiply).
EBJDAT_HD float uniform01(uint32_t r) {
  return bits_float(0x3F800000u | (r >> 9)) - 0.99999994039535522f;
}

// Box-Muller of the word pair (ra, rb): radius sqrt(-2 log u(ra)), angle
// theta = (u(rb) - 0.5) * float32(2 pi) (the specification's fp32 product, exact here as
// everywhere: no FMA contraction). The log is log_unit below, accurate to 1e-7 relative
// (its argument comes within 2^-24 of 1, where an approximate log's absolute error would
// swamp the result). On the device sin, cos and the square root take the special-function
// unit: sin.approx / cos.approx are within 2^-21.4 of sin / cos on [-pi, pi], so z moves by
// at most 5.8 * 4e-7, and r2 * rsqrt(r2) by a relative 2^-22: inside NOISE_ATOL (1e-5)
// with room, without sinpif / cospif's polynomials or the IEEE sqrt's refinement and slow
// path. The host evaluates sin / cos in double, rounded once, and sqrtf.
EBJDAT_HD float bm_theta(uint32_t rb) { return (uniform01(rb) - 0.5f) * 6.2831854820251465f; }

// ln(u) for the uniforms u of uniform01 (normal, in [2^-24, 1)): logf without its cases
// for zero, subnormals, infinities and NaN, which these u never are (16 instructions where
// logf takes about 24). u = 2^e * m with m in [sqrt(1/2), sqrt(2)); f = m - 1 is exact and
// ln(1 + f) = f - f^2 / 2 + f^3 P(f), P a degree-6 least-squares fit of the remainder on
// that interval (coefficients rounded to fp32); fmaf throughout, so host and device agree
// bit for bit. Over all 2^23 possible u the relative error is below 1e-7 (1.6 ulp) and the
// Box-Muller radius is within 1.3e-7 of sqrt(-2 ln u) in double (tests/test_philox_log.py
// checks every u).
EBJDAT_HD float log_unit(float u) {
  const uint32_t bits = float_bits(u);
  const uint32_t e_bits = (bits - 0x3F3504F3u) & 0xFF800000u;  // 0x3F3504F3: fp32 sqrt(1/2)
  const float m = bits_float(bits - e_bits);
  const float e = (float)((int32_t)e_bits >> 23);
  const float f = m - 1.0f;
  float p = 0.08506953716278076f;
  p = fmaf(p, f, -0.14197471737861633f);
  p = fmaf(p, f, 0.14950978755950928f);
  p = fmaf(p, f, -0.165879487991333f);
  p = fmaf(p, f, 0.19960597157478333f);
  p = fmaf(p, f, -0.250009685754776f);
  p = fmaf(p, f, 0.33333972096443176f);
  const float r = fmaf(f * f, fmaf(f, p, -0.5f), f);   // f - f^2 / 2 + f^3 P(f)
  return fmaf(e, 0.693147182464599609375f, r);          // + e * fp32(ln 2)
}

EBJDAT_HD float bm_radius(uint32_t ra) {
  const float r2 = -2.0f * log_unit(uniform01(ra));  // in [1.19e-7, 33.3]: normal, never 0
#if defined(__CUDA_ARCH__)
  float rs;  // r2 is normal: the flush-to-zero form skips rsqrtf's subnormal rescaling
  asm("rsqrt.approx.ftz.f32 %0, %1;" : "=f"(rs) : "f"(r2));
  return r2 * rs;
#else
  return sqrtf(r2);
#endif
}

// Both normals of the pair (ra, rb): radius * cos(theta) and radius * sin(theta).
EBJDAT_HD void box_muller2(uint32_t ra, uint32_t rb, float& zc, float& zs) {
  const float radius = bm_radius(ra), theta = bm_theta(rb);
#if defined(__CUDA_ARCH__)
  float s, c;
  __sincosf(theta, &s, &c);
#else
  const float s = (float)sin((double)theta), c = (float)cos((double)theta);
#endif
  zc = radius * c;
  zs = radius * s;
}

// One of the pair's normals: the cos branch, or the sin branch when `sine`.
EBJDAT_HD float box_muller(uint32_t ra, uint32_t rb, bool sine) {
  const float radius = bm_radius(ra), theta = bm_theta(rb);
#if defined(__CUDA_ARCH__)
  return radius * (sine ? __sinf(theta) : __cosf(theta));
#else
  return radius * (float)(sine ? sin((double)theta) : cos((double)theta));
#endif
}

// Counters a call of n elements draws.
EBJDAT_HD uint64_t counters_for(uint64_t n) { return (n + 3) / 4; }

// The 32-bit word of logical element i of a call at offset: r_(i % 4) of counter offset + i / 4.
EBJDAT_HD uint32_t word_of(uint64_t seed, uint64_t offset, uint64_t i) {
  const Philox4 r = philox4x32(seed, offset + i / 4);
  const unsigned j = (unsigned)(i % 4);
  return j == 0 ? r.r0 : j == 1 ? r.r1 : j == 2 ? r.r2 : r.r3;
}

// The normal of logical element i of a call at offset (any order: channels_last walks).
EBJDAT_HD float normal_of(uint64_t seed, uint64_t offset, uint64_t i) {
  const Philox4 r = philox4x32(seed, offset + i / 4);
  const unsigned j = (unsigned)(i % 4);
  return j < 2 ? box_muller(r.r0, r.r1, j == 1) : box_muller(r.r2, r.r3, j == 3);
}

// The normals z[0..3] of logical elements 4q .. 4q + 3: one Philox call for four.
EBJDAT_HD void normals4(uint64_t seed, uint64_t offset, uint64_t q, float* z) {
  const Philox4 r = philox4x32(seed, offset + q);
  box_muller2(r.r0, r.r1, z[0], z[1]);
  box_muller2(r.r2, r.r3, z[2], z[3]);
}

// The words w[0..3] of logical elements 4q .. 4q + 3: one Philox call for four.
EBJDAT_HD void words4(uint64_t seed, uint64_t offset, uint64_t q, uint32_t* w) {
  const Philox4 r = philox4x32(seed, offset + q);
  w[0] = r.r0;
  w[1] = r.r1;
  w[2] = r.r2;
  w[3] = r.r3;
}

// Draws for memory elements base .. base + N - 1 of a call (those below n). In logical
// order with N a multiple of 4, quad(q, out + 4q) fills four elements from one Philox call
// (base is a multiple of N, so of 4); otherwise out[j] = one(logical index) element by
// element along the logical walk. The device kernels and the host loops both call it.
template <int N, class T, class Quad, class One>
EBJDAT_HD void draw_chunk(const Layout& L, int64_t base, int64_t n, T* out, Quad quad, One one) {
  if (N % 4 == 0 && !L.channels_last) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int q = 0; q < N / 4; ++q) quad((uint64_t)(base / 4 + q), out + 4 * q);
    return;
  }
  LogicalWalk walk(L, base);
  for (int j = 0; j < N; ++j) {
    if (base + j >= n) break;
    out[j] = one((uint64_t)walk.get());
    walk.next();
  }
}

// The normals of memory elements base .. base + N - 1 of a call (those below n): one
// Philox call per four in logical order, one per element along a channels_last walk.
template <int N>
EBJDAT_HD void noise_chunk(uint64_t seed, uint64_t offset, const Layout& L, int64_t base, int64_t n, float* z) {
  draw_chunk<N>(L, base, n, z, [&](uint64_t q, float* o) { normals4(seed, offset, q, o); },
                [&](uint64_t i) { return normal_of(seed, offset, i); });
}

// The generator's done-count, state[2]: (tag << 32) | count, the tag being the low 32
// bits of the offset the counting launch read. A block that finishes adds itself to the
// count if the tag is its own and starts a fresh count otherwise (a count left by another
// offset is stale: dropped); the block that brings the count to its grid size advances
// the offset and leaves the count at 0. Launches that never overlap therefore advance
// once, at their last block in time. Overlapping launches on one generator (two streams)
// share an offset, so they draw the same noise, but they cannot wedge the counter: each
// launch's blocks count from 0 or on top of each other, a count reaching either grid
// advances, and whatever count they leave carries a tag that the next offset does not
// match. The host twin below is what tests interleave.
EBJDAT_HD uint64_t count_done(uint64_t done, uint64_t offset, uint32_t grid, bool& advance) {
  const uint32_t tag = (uint32_t)offset;
  const uint32_t seen = (uint32_t)(done >> 32) == tag ? (uint32_t)done : 0u;
  advance = seen + 1u >= grid;
  return ((uint64_t)tag << 32) | (uint64_t)(advance ? 0u : seen + 1u);
}

#if defined(__CUDACC__)
// A launch's generator: every thread reads seed and offset at its start (two loads, no
// barrier, no atomic: no block waits before its own loads) ...
__device__ __forceinline__ void read_generator(const int64_t* state, uint64_t& seed, uint64_t& offset) {
  const volatile int64_t* vs = state;
  seed = (uint64_t)vs[0];
  offset = (uint64_t)vs[1];
}

// ... and after its work each block counts itself done once (every thread of the block
// calls this after its last use of seed and offset); the block that completes the count
// writes offset + n counters.
__device__ __forceinline__ void finish_generator(int64_t* state, uint64_t offset, uint64_t n) {
  __syncthreads();   // every thread of the block has read (it read at its start)
  if (threadIdx.x == 0) {
    __threadfence();
    unsigned long long* word = reinterpret_cast<unsigned long long*>(state + 2);
    unsigned long long old = *reinterpret_cast<volatile unsigned long long*>(word), assumed;
    bool advance = false;
    do {
      assumed = old;
      old = atomicCAS(word, assumed, (unsigned long long)count_done(assumed, offset, gridDim.x, advance));
    } while (old != assumed);
    if (advance) {
      volatile int64_t* vs = state;
      vs[1] = (int64_t)(offset + n);
    }
  }
}
#endif

}  // namespace ebjdat
