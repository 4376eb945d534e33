// cpu_normals: Philox4x32-10 and Box-Muller over a block of 64 counters in structure-of-
// arrays form: first the words (AVX-512 intrinsics, or a loop the auto-vectoriser takes),
// then the normals in a `#pragma omp simd` loop (-fopenmp-simd): the log is
// kernels/philox.cuh's log_unit (fmaf: one instruction in the FMA copies), and sin / cos a float polynomial pair (Cephes' sinf /
// cosf coefficients, Cody-Waite reduction by pi/2) instead of the scalar host twin's double
// sin / cos, which do not vectorise. |sin error| < 2e-7 on [-pi, pi], so a normal (radius
// <= 5.8) moves by < 1.2e-6, inside NOISE_ATOL (1e-5). The words are those of philox4x32.
#include "cpu_noise.h"

#include <cmath>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "philox.cuh"

namespace ebjdat {
namespace {

constexpr int kBlock = 64;   // counters per vector pass: 256 normals, 1 KiB of floats

// sin and cos of t in [-pi, pi] (bm_theta's range).
inline void sincos_poly(float t, float& s, float& c) {
  const float j = nearbyintf(t * 0.636619772367581f);   // t / (pi / 2), rounded: |x| <= pi/4
  const int q = ((int)j) & 3;
  float x = t - j * 1.5703125f;                          // Cody-Waite: pi/2 in three parts
  x = x - j * 4.837512969970703125e-4f;
  x = x - j * 7.54978995489188216e-8f;
  const float x2 = x * x;
  const float sp = x + x * x2 * (-1.6666654611e-1f + x2 * (8.3321608736e-3f + x2 * -1.9515295891e-4f));
  const float cp = 1.0f - 0.5f * x2 +
                   x2 * x2 * (4.166664568298827e-2f + x2 * (-1.388731625493765e-3f + x2 * 2.443315711809948e-5f));
  // t = x + q pi/2: rotate (sin x, cos x) by q quarter turns
  const float s1 = (q & 1) ? cp : sp, c1 = (q & 1) ? sp : cp;
  s = (q & 2) ? -s1 : s1;
  c = ((q + 1) & 2) ? -c1 : c1;
}

// Philox words of counters base + k, k < 64: w[j][k] = r_j (the generic pass; vectorised,
// but its 32x32->64 products widen to 64-bit lanes).
inline void philox_block(uint32_t key0, uint32_t key1, uint64_t base, uint32_t (*w)[kBlock]) {
#pragma omp simd
  for (int k = 0; k < kBlock; ++k) {
    const uint64_t ctr = base + (uint64_t)k;
    uint32_t c0 = (uint32_t)ctr, c1 = (uint32_t)(ctr >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = key0, k1 = key1;
    for (int r = 0; r < 10; ++r) {   // philox4x32's rounds, key bumped before rounds 1..9
      const uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
      const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
      c0 = n0;
      c1 = (uint32_t)p1;
      c2 = n2;
      c3 = (uint32_t)p0;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    w[0][k] = c0;
    w[1][k] = c1;
    w[2][k] = c2;
    w[3][k] = c3;
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// The same words with AVX-512 intrinsics, 16 counters a vector: the high and low halves
// of the products come from vpmuludq on the even and the odd lanes, blended back.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
void philox_block_avx512(uint32_t key0, uint32_t key1, uint64_t base, uint32_t (*w)[kBlock]) {
  const __m512i m0 = _mm512_set1_epi32((int)0xD2511F53u), m1 = _mm512_set1_epi32((int)0xCD9E8D57u);
  for (int v = 0; v < kBlock; v += 16) {
    alignas(64) uint32_t lo[16], hi[16];
    for (int k = 0; k < 16; ++k) {
      const uint64_t ctr = base + (uint64_t)(v + k);
      lo[k] = (uint32_t)ctr;
      hi[k] = (uint32_t)(ctr >> 32);
    }
    __m512i c0 = _mm512_load_si512(lo), c1 = _mm512_load_si512(hi);
    __m512i c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
    uint32_t k0 = key0, k1 = key1;
    for (int r = 0; r < 10; ++r) {
      const __m512i e0 = _mm512_mul_epu32(c0, m0), o0 = _mm512_mul_epu32(_mm512_srli_epi64(c0, 32), m0);
      const __m512i e1 = _mm512_mul_epu32(c2, m1), o1 = _mm512_mul_epu32(_mm512_srli_epi64(c2, 32), m1);
      const __m512i hi0 = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(e0, 32), o0);
      const __m512i lo0 = _mm512_mask_blend_epi32(0xAAAA, e0, _mm512_slli_epi64(o0, 32));
      const __m512i hi1 = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(e1, 32), o1);
      const __m512i lo1 = _mm512_mask_blend_epi32(0xAAAA, e1, _mm512_slli_epi64(o1, 32));
      const __m512i n0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32((int)k0));
      const __m512i n2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32((int)k1));
      c0 = n0;
      c1 = lo1;
      c2 = n2;
      c3 = lo0;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    _mm512_storeu_si512(w[0] + v, c0);
    _mm512_storeu_si512(w[1] + v, c1);
    _mm512_storeu_si512(w[2] + v, c2);
    _mm512_storeu_si512(w[3] + v, c3);
  }
}
#endif

// The Philox words of counters offset + q0 .. + nq - 1, a block of kBlock at a time:
// emit(w, m, k0) with w[j][k] word j of counter k0 + k, k < m. Inlined into one copy per
// instruction set below (ISA-only target attributes, no arch=, so the header's inline
// functions inline into each copy).
template <bool kAvx512, class Emit>
__attribute__((always_inline)) inline void philox_blocks(uint64_t seed, uint64_t offset, uint64_t q0,
                                                         int64_t nq, Emit&& emit) {
  const uint32_t key0 = (uint32_t)seed, key1 = (uint32_t)(seed >> 32);
  alignas(64) uint32_t w[4][kBlock];
  for (int64_t b = 0; b < nq; b += kBlock) {
    const int m = (int)(nq - b < kBlock ? nq - b : kBlock);
    const uint64_t base = offset + q0 + (uint64_t)b;
#if defined(__x86_64__) && defined(__GNUC__)
    if (kAvx512)
      philox_block_avx512(key0, key1, base, w);
    else
#endif
      philox_block(key0, key1, base, w);
    emit(w, m, b);
  }
}

// The normals: Box-Muller across each block's counters.
template <bool kAvx512>
__attribute__((always_inline)) inline void normals_body(uint64_t seed, uint64_t offset, uint64_t q0,
                                                        int64_t nq, float* z) {
  philox_blocks<kAvx512>(seed, offset, q0, nq, [&](const uint32_t (*w)[kBlock], int m, int64_t b) {
    float* zb = z + 4 * b;
#pragma omp simd
    for (int k = 0; k < m; ++k) {   // Box-Muller on (r0, r1) and (r2, r3), as box_muller2
      const float ra = sqrtf(-2.0f * log_unit(uniform01(w[0][k])));
      const float rb = sqrtf(-2.0f * log_unit(uniform01(w[2][k])));
      float sa, ca, sb, cb;
      sincos_poly(bm_theta(w[1][k]), sa, ca);
      sincos_poly(bm_theta(w[3][k]), sb, cb);
      zb[4 * k + 0] = ra * ca;
      zb[4 * k + 1] = ra * sa;
      zb[4 * k + 2] = rb * cb;
      zb[4 * k + 3] = rb * sb;
    }
  });
}

// The words, interleaved into element order.
template <bool kAvx512>
__attribute__((always_inline)) inline void words_body(uint64_t seed, uint64_t offset, uint64_t q0,
                                                      int64_t nq, uint32_t* out) {
  philox_blocks<kAvx512>(seed, offset, q0, nq, [&](const uint32_t (*w)[kBlock], int m, int64_t b) {
    uint32_t* ob = out + 4 * b;
    for (int k = 0; k < m; ++k)
      for (int j = 0; j < 4; ++j) ob[4 * k + j] = w[j][k];
  });
}

#if defined(__x86_64__) && defined(__GNUC__)
#define EBJDAT_X86_CLONES 1
#define EBJDAT_AVX2 __attribute__((target("avx2,fma")))
#define EBJDAT_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma"), target("prefer-vector-width=512")))
EBJDAT_AVX2 void normals_avx2(uint64_t s, uint64_t o, uint64_t q, int64_t nq, float* z) {
  normals_body<false>(s, o, q, nq, z);
}
EBJDAT_AVX512 void normals_avx512(uint64_t s, uint64_t o, uint64_t q, int64_t nq, float* z) {
  normals_body<true>(s, o, q, nq, z);
}
EBJDAT_AVX2 void words_avx2(uint64_t s, uint64_t o, uint64_t q, int64_t nq, uint32_t* w) {
  words_body<false>(s, o, q, nq, w);
}
EBJDAT_AVX512 void words_avx512(uint64_t s, uint64_t o, uint64_t q, int64_t nq, uint32_t* w) {
  words_body<true>(s, o, q, nq, w);
}
#endif
void normals_base(uint64_t s, uint64_t o, uint64_t q, int64_t nq, float* z) { normals_body<false>(s, o, q, nq, z); }
void words_base(uint64_t s, uint64_t o, uint64_t q, int64_t nq, uint32_t* w) { words_body<false>(s, o, q, nq, w); }

template <class T>
using DrawFn = void (*)(uint64_t, uint64_t, uint64_t, int64_t, T*);

template <class T>
DrawFn<T> pick(DrawFn<T> avx512, DrawFn<T> avx2, DrawFn<T> base) {
  const int level = cpu_simd_index();
  return level == 2 && avx512 ? avx512 : level >= 1 && avx2 ? avx2 : base;
}

#ifdef EBJDAT_X86_CLONES
DrawFn<float> pick_normals() { return pick<float>(normals_avx512, normals_avx2, normals_base); }
DrawFn<uint32_t> pick_words() { return pick<uint32_t>(words_avx512, words_avx2, words_base); }
#else
DrawFn<float> pick_normals() { return pick<float>(nullptr, nullptr, normals_base); }
DrawFn<uint32_t> pick_words() { return pick<uint32_t>(nullptr, nullptr, words_base); }
#endif

}  // namespace

// Chosen once, when the module loads, from the CPU it runs on (never the build machine's).
static const DrawFn<float> kNormals = pick_normals();
static const DrawFn<uint32_t> kWords = pick_words();

void cpu_normals(uint64_t seed, uint64_t offset, uint64_t q0, int64_t nq, float* z) {
  kNormals(seed, offset, q0, nq, z);
}

void cpu_words(uint64_t seed, uint64_t offset, uint64_t q0, int64_t nq, uint32_t* w) {
  kWords(seed, offset, q0, nq, w);
}

int cpu_simd_index() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return 2;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
  return 0;
}

const char* cpu_simd_level() {
  static const char* const names[] = {"baseline", "avx2", "avx512"};
  return names[cpu_simd_index()];
}

}  // namespace ebjdat
