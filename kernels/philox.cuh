// Philox4x32-10 and the noise it feeds, exactly as ebjdat/ops/philox.py specifies.
//
// key (k0, k1) = (seed lo32, seed hi32); one Philox call serves four consecutive
// elements: logical element i of a call at offset o uses counter c = o + i / 4 (64 bits,
// words (c lo32, c hi32, 0, 0)) and output j = i % 4; a call advances the offset by
// ceil(n / 4). Normals: Box-Muller on the pair (r_2p, r_2p+1), p = j / 2, cos for even j,
// sin for odd j. The integer words are bit-identical to the torch reference; the normal
// differs only through logf, cospif and sinpif (within ebjdat.ops.philox.NOISE_ATOL).
#pragma once

#include "common.cuh"

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

// Uniform in (0, 1): ((r >> 9) + 0.5) * 2^-23, exact in fp32.
EBJDAT_HD float uniform01(uint32_t r) {
  return ((float)(r >> 9) + 0.5f) * 1.1920928955078125e-07f;
}

// cos(2 pi (u - 0.5)) as cospi(2u - 1), or sin as sinpi(2u - 1) (2u - 1 is exact for
// these u): on the device cospif / sinpif need no Payne-Hanek argument reduction, so the
// kernels carry no slow-path call and no local array; the host evaluates the same
// functions in double. Both are within a few 1e-7 of the specification's fp32
// cos / sin((u - 0.5) * float32(2 pi)) (philox.py, NOISE_ATOL).
EBJDAT_HD float trig_2pi_centered(float u, bool sine) {
  const float t = 2.0f * u - 1.0f;
#if defined(__CUDA_ARCH__)
  return sine ? sinpif(t) : cospif(t);
#else
  const double a = 3.141592653589793 * (double)t;
  return (float)(sine ? sin(a) : cos(a));
#endif
}

// Box-Muller radius sqrt(-2 log u(ra)) of a word pair's first word.
EBJDAT_HD float bm_radius(uint32_t ra) { return sqrtf(-2.0f * logf(uniform01(ra))); }

// Standard normal of the pair (ra, rb): the radius times cos(2 pi (u(rb) - 0.5)), or sin of
// the same angle for the pair's second element.
EBJDAT_HD float box_muller(uint32_t ra, uint32_t rb, bool sine) {
  return bm_radius(ra) * trig_2pi_centered(uniform01(rb), sine);
}

// Both normals of the pair (ra, rb): the cos and the sin branch of one radius and angle.
EBJDAT_HD void box_muller2(uint32_t ra, uint32_t rb, float& zc, float& zs) {
  const float radius = bm_radius(ra), u = uniform01(rb);
  zc = radius * trig_2pi_centered(u, false);
  zs = radius * trig_2pi_centered(u, true);
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
