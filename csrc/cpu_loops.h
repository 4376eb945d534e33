// The cpu backend's loop shapes, shared by every op family's host loops: element loops
// vectorised in a copy per instruction set (simd_for), split over threads in whole blocks
// (host_for), and the Philox draws fed to them a block at a time (normal_blocks,
// word_blocks, channels_last_draws). A block's draws depend only on its position, so the
// results are the same for every thread count.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu_noise.h"
#include "cpu_threads.h"

namespace ebjdat {

#if defined(__x86_64__) && defined(__GNUC__)
// f(i) for i < n, vectorised (`#pragma omp simd`) in a copy per instruction set; f's body
// (the element functions) inlines into each copy, as their target attributes name
// instruction sets only. No FMA contraction (-ffp-contract=off), so every copy rounds alike.
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

// Elements per block of the threaded loops: a multiple of 4, so each block starts at a
// Philox counter boundary, and 4 KiB of fp32 draws (stays in L1).
constexpr int64_t kHostBlock = 1024;

// block(base, m) for the blocks [base, base + m) of [0, n), over `threads` threads.
template <class F>
void for_blocks(int64_t n, int threads, const F& block) {
  const int64_t units = (n + kHostBlock - 1) / kHostBlock;
  parallel_for(units, loop_threads(n, units, threads), [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t base = u * kHostBlock;
      block(base, n - base < kHostBlock ? n - base : kHostBlock);
    }
  });
}

// f(i) for i < n: vectorised blocks over `threads` threads.
template <class F>
void host_for(int64_t n, int threads, const F& f) {
  for_blocks(n, threads, [&](int64_t base, int64_t m) {
    simd_for(m, [&](int64_t j) { f(base + j); });
  });
}

// f(base, m, v): the blocks of a contiguous call's n elements with v[j] the draw of element
// base + j, from draw(q0, nq, buf) (cpu_normals or cpu_words of a call at `offset`).
template <class T, class Draw, class F>
void draw_blocks(int64_t n, int threads, const Draw& draw, const F& f) {
  for_blocks(n, threads, [&](int64_t base, int64_t m) {
    alignas(64) T v[kHostBlock];
    draw((uint64_t)base / 4, (m + 3) / 4, v);
    f(base, m, static_cast<const T*>(v));
  });
}

// draw_blocks of the normals of a call at `offset` under `seed`.
template <class F>
void normal_blocks(uint64_t seed, uint64_t offset, int64_t n, int threads, const F& f) {
  draw_blocks<float>(n, threads, [&](uint64_t q0, int64_t nq, float* z) { cpu_normals(seed, offset, q0, nq, z); }, f);
}

// draw_blocks of the Philox words of a call at `offset` under `seed`.
template <class F>
void word_blocks(uint64_t seed, uint64_t offset, int64_t n, int threads, const F& f) {
  draw_blocks<uint32_t>(n, threads, [&](uint64_t q0, int64_t nq, uint32_t* w) { cpu_words(seed, offset, q0, nq, w); },
                        f);
}

// f(m, v) for every memory element m < n of a channels_last (N, C, H, W) tensor, v the draw
// of its logical element: a sample's C*H*W elements are consecutive in both orders, so its
// draws come from one draw(q0, nq, buf) call (cpu_normals or cpu_words: the same numbers as
// the contiguous path's, bit for bit) and are read at the logical index of each memory
// position. Samples are split over `threads` threads.
template <class T, class Draw, class F>
void channels_last_draws(const Layout& L, int64_t n, int threads, const Draw& draw, const F& f) {
  const int64_t HW = L.H * L.W, D = L.C * HW, samples = n / D;
  parallel_for(samples, loop_threads(n, samples, threads), [&](int64_t s0, int64_t s1) {
    std::vector<T> buf((size_t)(D + 8));
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t first = s * D, q0 = first / 4, q1 = (first + D + 3) / 4;
      draw((uint64_t)q0, q1 - q0, buf.data());
      const T* v = buf.data() + (first - 4 * q0);
      int64_t m = first;
      for (int64_t hw = 0; hw < HW; ++hw)
        for (int64_t c = 0; c < L.C; ++c, ++m) f(m, v[c * HW + hw]);
    }
  });
}

// channels_last_draws of the normals of a call at `offset` under `seed`.
template <class F>
void channels_last_normals(uint64_t seed, uint64_t offset, const Layout& L, int64_t n, int threads, const F& f) {
  channels_last_draws<float>(L, n, threads, [&](uint64_t q0, int64_t nq, float* z) {
    cpu_normals(seed, offset, q0, nq, z);
  }, f);
}

// channels_last_draws of the Philox words of a call at `offset` under `seed`.
template <class F>
void channels_last_words(uint64_t seed, uint64_t offset, const Layout& L, int64_t n, int threads, const F& f) {
  channels_last_draws<uint32_t>(L, n, threads, [&](uint64_t q0, int64_t nq, uint32_t* w) {
    cpu_words(seed, offset, q0, nq, w);
  }, f);
}

}  // namespace ebjdat
