// Shared by host C++ (g++) and device code (nvcc): the EBJDAT_HD qualifier, the clamp
// every op ends with, and the map from memory order to the logical (row-major) order that
// indexes the Philox counters.
//
// No FMA contraction anywhere: element math is written as separate * and + so that it
// rounds exactly like the torch specification; CMakeLists.txt compiles device code with
// --fmad=false and host code with -ffp-contract=off to keep it that way.
#pragma once

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define EBJDAT_HD __host__ __device__ __forceinline__
#else
#define EBJDAT_HD inline
#endif

namespace ebjdat {

// clamp(v, lo, hi) as torch.clamp: NaN stays NaN (both comparisons are false) and with
// lo = -inf, hi = +inf it is the identity.
template <class C>
EBJDAT_HD C clamp_keep_nan(C v, C lo, C hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

// fp32 on sm_80+: max.NaN / min.NaN are the same clamp in two instructions, not four
// (two compares, two selects); they differ from the comparisons above only in the sign
// of a zero at a zero bound (max(-0, +0) = +0), which compares equal.
EBJDAT_HD float clamp_keep_nan(float v, float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("max.NaN.f32 %0, %0, %1;" : "+f"(v) : "f"(lo));
  asm("min.NaN.f32 %0, %0, %1;" : "+f"(v) : "f"(hi));
  return v;
#else
  return v < lo ? lo : (v > hi ? hi : v);
#endif
}

EBJDAT_HD float sqrt_rn(float v) { return sqrtf(v); }   // IEEE sqrt on host and device
EBJDAT_HD double sqrt_rn(double v) { return sqrt(v); }

// Memory layout of a dense tensor. channels_last == false: memory index == logical index.
// channels_last == true: an (N, C, H, W) tensor stored as (N, H, W, C); memory index
// m = ((n*H + h)*W + w)*C + c holds logical index ((n*C + c)*H + h)*W + w.
struct Layout {
  bool channels_last;
  int64_t C, H, W;
};

// Logical index of memory index m (three divisions: for one-off use).
EBJDAT_HD int64_t logical_index(const Layout& L, int64_t m) {
  if (!L.channels_last) return m;
  const int64_t c = m % L.C;
  int64_t t = m / L.C;
  const int64_t w = t % L.W;
  t /= L.W;
  const int64_t h = t % L.H;
  const int64_t n = t / L.H;
  return ((n * L.C + c) * L.H + h) * L.W + w;
}

// Walks memory indices m, m+1, ... yielding their logical indices with additions only
// (one decomposition at construction), for the consecutive elements of a thread.
struct LogicalWalk {
  Layout L;
  int64_t base;  // logical index of (n, 0, h, w); the element's is base + c*H*W
  int64_t c, h, w;

  EBJDAT_HD LogicalWalk(const Layout& layout, int64_t m) : L(layout), base(m), c(0), h(0), w(0) {
    if (!L.channels_last) return;
    c = m % L.C;
    int64_t t = m / L.C;
    w = t % L.W;
    t /= L.W;
    h = t % L.H;
    base = (t / L.H) * L.C * L.H * L.W + h * L.W + w;
  }
  EBJDAT_HD int64_t get() const { return L.channels_last ? base + c * L.H * L.W : base; }
  EBJDAT_HD void next() {
    if (!L.channels_last) { ++base; return; }
    if (++c < L.C) return;
    c = 0;
    ++base;                       // (h, w) -> the next pixel of the same sample ...
    if (++w < L.W) return;
    w = 0;
    if (++h < L.H) return;
    h = 0;
    base += (L.C - 1) * L.H * L.W;  // ... or the first pixel of the next sample
  }
};

}  // namespace ebjdat
