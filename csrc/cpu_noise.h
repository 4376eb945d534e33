// The cpu backend's Philox normals: the stream of kernels/philox.cuh (bit-identical words;
// normals within ebjdat.ops.philox.NOISE_ATOL of the specification) for a run of
// consecutive counters at once, so that the compiler vectorises across counters.
#pragma once

#include <cstdint>
#include <vector>

#include "common.cuh"

namespace ebjdat {

// z[4k + j] = normal j of counter offset + q0 + k (logical element 4 (q0 + k) + j of a call
// at `offset`), for k < nq. Compiled for baseline x86-64, AVX2+FMA and AVX-512; the copy
// is chosen when the module loads, by the CPU it runs on (cpu_noise.cpp).
void cpu_normals(uint64_t seed, uint64_t offset, uint64_t q0, int64_t nq, float* z);

// The instruction set cpu_normals runs with here: "avx512", "avx2" or "baseline".
const char* cpu_simd_level();

}  // namespace ebjdat

namespace ebjdat {

// 2: AVX-512, 1: AVX2+FMA, 0: baseline, as cpu_simd_level (read once).
int cpu_simd_index();

#if defined(__x86_64__) && defined(__GNUC__)
// The element loops: f(i) for i < n, vectorised (`#pragma omp simd`) in a copy per
// instruction set; f's body (the element functions) inlines into each copy, as their
// target attributes name instruction sets only. No FMA contraction (-ffp-contract=off), so
// every copy rounds alike.
template <class F>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma"), target("prefer-vector-width=512")))
void simd_for_avx512(int64_t n, const F& f) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) f(i);
}
template <class F>
__attribute__((target("avx2,fma"))) void simd_for_avx2(int64_t n, const F& f) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) f(i);
}
#endif

template <class F>
void simd_for(int64_t n, const F& f) {
#if defined(__x86_64__) && defined(__GNUC__)
  static const int level = cpu_simd_index();
  if (level == 2) return simd_for_avx512(n, f);
  if (level == 1) return simd_for_avx2(n, f);
#endif
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) f(i);
}

}  // namespace ebjdat

namespace ebjdat {

// f(m, z) for every memory element m < n of a channels_last (N, C, H, W) tensor, z the normal
// of its logical element: a sample's C*H*W elements are consecutive in both orders, so its
// normals come from one cpu_normals call (the same numbers as the contiguous path's, bit
// for bit) and are read at the logical index of each memory position.
template <class F>
void channels_last_normals(uint64_t seed, uint64_t offset, const Layout& L, int64_t n, const F& f) {
  const int64_t HW = L.H * L.W, D = L.C * HW;
  std::vector<float> buf((size_t)(D + 8));
  for (int64_t s0 = 0; s0 < n; s0 += D) {
    const int64_t q0 = s0 / 4, q1 = (s0 + D + 3) / 4;
    cpu_normals(seed, offset, (uint64_t)q0, q1 - q0, buf.data());
    const float* z = buf.data() + (s0 - 4 * q0);
    int64_t m = s0;
    for (int64_t hw = 0; hw < HW; ++hw)
      for (int64_t c = 0; c < L.C; ++c, ++m) f(m, z[c * HW + hw]);
  }
}

}  // namespace ebjdat
