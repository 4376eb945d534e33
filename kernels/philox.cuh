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

// cos(2 pi (u - 0.5)) as cospi(2u - 1) (2u - 1 is exact for these u): on the device cospif
// needs no Payne-Hanek argument reduction, so the kernels carry no slow-path call and no
// local array; the host evaluates the same cosine in double. Both are within a few 1e-7 of
// the specification's fp32 cos((u - 0.5) * float32(2 pi)) (philox.py, NOISE_ATOL).
EBJDAT_HD float cos_2pi_centered(float u) {
#if defined(__CUDA_ARCH__)
  return cospif(2.0f * u - 1.0f);
#else
  return (float)cos(3.141592653589793 * (double)(2.0f * u - 1.0f));
#endif
}

// sin(2 pi (u - 0.5)) as sinpi(2u - 1), the sine branch of the same pair.
EBJDAT_HD float sin_2pi_centered(float u) {
#if defined(__CUDA_ARCH__)
  return sinpif(2.0f * u - 1.0f);
#else
  return (float)sin(3.141592653589793 * (double)(2.0f * u - 1.0f));
#endif
}

// Standard normal (Box-Muller) of the pair (ra, rb): sqrt(-2 log u(ra)) times
// cos(2 pi (u(rb) - 0.5)), or sin of the same angle for the pair's second element.
EBJDAT_HD float box_muller(uint32_t ra, uint32_t rb, bool sine) {
  const float radius = sqrtf(-2.0f * logf(uniform01(ra)));
  const float u = uniform01(rb);
  return radius * (sine ? sin_2pi_centered(u) : cos_2pi_centered(u));
}

// Both normals of the pair (ra, rb): the cos and the sin branch of one radius and angle.
EBJDAT_HD void box_muller2(uint32_t ra, uint32_t rb, float& zc, float& zs) {
  const float radius = sqrtf(-2.0f * logf(uniform01(ra)));
  const float u = uniform01(rb);
  zc = radius * cos_2pi_centered(u);
  zs = radius * sin_2pi_centered(u);
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

#if defined(__CUDACC__)
// Reads the generator state [seed, offset, done] and advances it by n counters in the same launch,
// race-free and without a host sync. Every block calls this once, with all its threads:
// thread 0 reads seed and offset, fences, and counts its block in state[2]; the last block
// to count (all others have read by then) writes offset + n and resets the count. The
// values come back through shared memory to every thread of the block.
__device__ __forceinline__ void claim_generator(int64_t* state, int64_t n, uint64_t& seed,
                                                uint64_t& offset) {
  __shared__ uint64_t s_seed, s_offset;
  if (threadIdx.x == 0) {
    volatile int64_t* vs = state;
    s_seed = (uint64_t)vs[0];
    s_offset = (uint64_t)vs[1];
    __threadfence();
    const unsigned long long old =
        atomicAdd(reinterpret_cast<unsigned long long*>(state + 2), 1ull);
    if (old == (unsigned long long)gridDim.x - 1ull) {
      vs[1] = (int64_t)(s_offset + (uint64_t)n);
      vs[2] = 0;
    }
  }
  __syncthreads();
  seed = s_seed;
  offset = s_offset;
}
#endif

}  // namespace ebjdat
