// pgd_step and pgd_init: per-element math and per-thread pieces of the per-sample l2
// reductions, shared by the CUDA kernels (kernels/pgd.cu) and the host loops
// (csrc/pgd.cpp), and the kernels' launchers. Same order of operations and roundings as
// ebjdat/ops/pgd/spec.py, in compute type C (double for fp64 x, float otherwise), scalars
// pre-rounded to C.
//
// linf step:  v = x + alpha * sign(g);  [eps] v = xo + clamp(v - xo, -eps, eps);  clamp.
// l2 step:    gn = sqrt(sum g^2) + 1e-10;  v = x + alpha * (g / gn);
//             [eps] d = v - xo, dn = ||d|| (from three sums of one pass, below),
//             f = dn <= eps ? 1 : eps / dn, v = xo + d * f;  clamp.
// linf init:  v = xo + eps * (u(r0) * 2 - 1);  clamp.
// l2 init:    z = the elements' normals, zn = sqrt(sum z^2), radius = u(r0) of counter
//             offset + ceil(n / 4) + b; v = xo + z * ((radius / zn) * eps);  clamp.
// Sums run over one sample (D consecutive memory elements) in a fixed order (L2Plan below,
// for the step and the init alike), combined by the fixed tree of reduce.cuh, so host and
// device reduce in the same order.
#pragma once

#include "common.cuh"
#include "dtype.cuh"
#include "launch.h"
#include "philox.cuh"
#include "reduce.cuh"

namespace ebjdat {

template <class C>
struct PgdParams {
  C alpha, eps, lo, hi;
  bool has_eps;  // false: no projection (eps None)
};

// torch.sign: (g > 0) - (g < 0), so sign(NaN) = sign(+-0) = +0.
template <class C>
EBJDAT_HD C sign_of(C g) { return static_cast<C>(g > C(0)) - static_cast<C>(g < C(0)); }

template <class XT, class GT>
EBJDAT_HD XT pgd_step_linf_element(XT x, GT g, XT xo, const PgdParams<compute_t<XT>>& p) {
  using C = compute_t<XT>;
  const C o = load_as<C>(xo);
  C v = load_as<C>(x) + p.alpha * sign_of(load_as<C>(g));
  if (p.has_eps) v = o + clamp_keep_nan(v - o, -p.eps, p.eps);
  return store_as<XT>(clamp_keep_nan(v, p.lo, p.hi));
}

// The 32-bit words of memory elements base .. base + N - 1 of a call (those below n): one
// Philox call per four in logical order, one per element along a channels_last walk.
template <int N>
EBJDAT_HD void words_chunk(uint64_t seed, uint64_t offset, const Layout& L, int64_t base, int64_t n,
                           uint32_t* r) {
  draw_chunk<N>(L, base, n, r, [&](uint64_t q, uint32_t* w) { words4(seed, offset, q, w); },
                [&](uint64_t i) { return word_of(seed, offset, i); });
}

template <class XT>
EBJDAT_HD XT pgd_init_linf_element(XT xo, uint32_t r0, const PgdParams<compute_t<XT>>& p) {
  using C = compute_t<XT>;
  const C u = static_cast<C>(uniform01(r0));
  const C v = load_as<C>(xo) + p.eps * (u * C(2) - C(1));
  return store_as<XT>(clamp_keep_nan(v, p.lo, p.hi));
}

// ---- l2 step -------------------------------------------------------------------------
// One pass of sums, one of writes (x_adv and grad are read twice, not three times): with
// d0 = x - xo and a = alpha / gn, the projected distance expands as
//   ||d||^2 = ||d0 + a g||^2 = sum d0^2 + 2 a sum d0 g + a^2 sum g^2,
// so the three sums of the first pass give gn and ||d|| together. The expansion differs
// from the spec's direct sum by rounding only (relative ~1e-7 of (eps + alpha)^2 in fp32).
//
// The plan: a sample of D elements is cut into `splits` chunks of `chunk` elements (the
// last may be shorter), one block of `threads` threads each, so that a few large samples
// still fill the GPU. Thread t adds the chunk's N-element vectors t, t + T, ... (N =
// kElemsPerThread<XT>, one 16-byte access), element by element in order; block_sum
// combines the threads (reduce.cuh), and the chunks' sums are combined the same way
// (thread t takes chunks t, t + T, ...). The host loop replays the plan bit for bit.
constexpr int64_t kL2Blocks = 1024;  // blocks a launch aims at: 8 per SM on a 132-SM GPU

struct L2Plan {
  int64_t chunk, splits;
  int threads;
};

EBJDAT_HD L2Plan l2_plan(int64_t batch, int64_t D, int N) {
  const int64_t unit = 32 * (int64_t)N;                // one vector per lane of a warp
  const int64_t want = (kL2Blocks + batch - 1) / batch;  // chunks per sample wanted
  int64_t chunk = (D + want - 1) / want;
  chunk = ((chunk + unit - 1) / unit) * unit;
  if (chunk >= D) chunk = D;
  const int64_t vecs = (chunk + N - 1) / N;
  const int threads = vecs >= kThreads ? kThreads : (int)((vecs + 31) / 32) * 32;
  return L2Plan{chunk, (D + chunk - 1) / chunk, threads};
}

template <class C>
struct L2Sums {
  C gg, dg, dd;  // sum g^2, sum (x - xo) g, sum (x - xo)^2
};

template <class C> EBJDAT_HD C l2_eps_floor() { return static_cast<C>(1e-10); }

// Adds `count` (<= N) elements of one vector to s, in order; x and xo only with has_eps.
template <class C, int N, class XT, class GT>
EBJDAT_HD void l2_accumulate(L2Sums<C>& s, const XT (&xs)[N], const GT (&gs)[N],
                             const XT (&os)[N], int count, bool has_eps) {
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int j = 0; j < N; ++j) {  // all N with a test: static indices keep the vector in registers
    if (j >= count) break;
    const C g = load_as<C>(gs[j]);
    s.gg = s.gg + g * g;
    if (has_eps) {
      const C d = load_as<C>(xs[j]) - load_as<C>(os[j]);
      s.dg = s.dg + d * g;
      s.dd = s.dd + d * d;
    }
  }
}

template <class C>  // the projection factor min(1, eps / dn) as the specification writes it
EBJDAT_HD C l2_factor(C dn, const PgdParams<C>& p) {
  return dn <= p.eps ? C(1) : p.eps / dn;
}

// gn = sqrt(sum g^2) + 1e-10 and the projection factor f from a sample's sums.
template <class C>
EBJDAT_HD void l2_step_scalars(const L2Sums<C>& s, const PgdParams<C>& p, C& gn, C& f) {
  gn = sqrt_rn(s.gg) + l2_eps_floor<C>();
  f = C(1);
  if (!p.has_eps) return;
  const C a = p.alpha / gn;
  C dn2 = s.dd + (a + a) * s.dg;   // NaN or inf in g or x reach dn2 here, as in the spec
  // a = 0 (alpha 0, or sum g^2 overflowed, where the spec's g / gn is 0 for finite g): no
  // square term, which would be 0 * inf
  if (a != C(0)) dn2 = dn2 + (a * a) * s.gg;
  f = l2_factor(sqrt_rn(dn2 < C(0) ? C(0) : dn2), p);  // rounding can make dn2 -0 or -tiny
}

template <class XT, class GT>
EBJDAT_HD XT l2_step_element(XT x, GT g, XT xo, compute_t<XT> gn, compute_t<XT> f,
                             const PgdParams<compute_t<XT>>& p) {
  using C = compute_t<XT>;
  C v = load_as<C>(x) + p.alpha * (load_as<C>(g) / gn);
  if (p.has_eps) {
    const C o = load_as<C>(xo);
    v = o + (v - o) * f;
  }
  return store_as<XT>(clamp_keep_nan(v, p.lo, p.hi));
}

// ---- l2 init -------------------------------------------------------------------------
// The plan of the l2 step (L2Plan: chunks of a sample, a block of `threads` each) with
// the normals drawn by vectors: thread t of a chunk [lo, hi) takes the N-element runs of
// memory starting at multiples of N (so a run in logical order is whole Philox calls)
// v0 + t, v0 + t + T, ... (v0 = lo / N) that meet the chunk, and in each the elements
// inside the chunk, in order.
// z of memory element m: the normal of its logical index (philox.cuh).
template <class C>
EBJDAT_HD C l2_init_z(uint64_t seed, uint64_t offset, const Layout& L, int64_t m) {
  return static_cast<C>(normal_of(seed, offset, (uint64_t)logical_index(L, m)));
}

template <class C, int N>  // thread t's share of sum z^2 over the chunk [lo, hi) of a call of n
EBJDAT_HD C l2_init_sq_partial(uint64_t seed, uint64_t offset, const Layout& L, int64_t lo,
                               int64_t hi, int64_t n, int t, int T) {
  C acc = C(0);
  for (int64_t base = (lo / N + t) * N; base < hi; base += (int64_t)T * N) {
    float z[N] = {};
    noise_chunk<N>(seed, offset, L, base, n, z);
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int j = 0; j < N; ++j) {
      if (base + j < lo || base + j >= hi) continue;
      const C v = static_cast<C>(z[j]);
      acc = acc + v * v;
    }
  }
  return acc;
}

template <class C>  // (radius / zn) * eps, radius = u(r0) of counter offset + ceil(n / 4) + b
EBJDAT_HD C l2_init_scale(uint64_t seed, uint64_t offset, int64_t n, int64_t b, C zsq,
                          const PgdParams<C>& p) {
  const Philox4 r = philox4x32(seed, offset + counters_for((uint64_t)n) + (uint64_t)b);
  const C radius = static_cast<C>(uniform01(r.r0));
  return (radius / sqrt_rn(zsq)) * p.eps;
}

template <class XT>
EBJDAT_HD XT l2_init_element(XT xo, compute_t<XT> z, compute_t<XT> scale,
                             const PgdParams<compute_t<XT>>& p) {
  using C = compute_t<XT>;
  return store_as<XT>(clamp_keep_nan(load_as<C>(xo) + z * scale, p.lo, p.hi));
}

// ---- launchers (kernels/pgd.cu) -------------------------------------------------------
// linf: elementwise; l2: per sample of n / batch consecutive elements, in L2Plan's
// chunks. part: scratch of part_count >= l2_scratch(...) compute-type values (unused, may
// be null, when the plan has one chunk per sample).
template <class XT, class GT>
const char* pgd_step_launch(XT* x, const GT* g, const XT* xo, int64_t n, int64_t batch,
                            const PgdParams<compute_t<XT>>& p, bool l2,
                            compute_t<XT>* part, int64_t part_count, int device, void* stream);

// Scratch values the l2 step of n elements in `batch` samples of XT needs: 3 per chunk,
// 0 with one chunk per sample.
template <class XT>
inline int64_t l2_scratch(int64_t n, int64_t batch) {
  if (n <= 0) return 0;
  const L2Plan plan = l2_plan(batch, n / batch, kElemsPerThread<XT>);
  return plan.splits == 1 ? 0 : 3 * batch * plan.splits;
}

// Random start; advances the generator offset by ceil(n / 4) (l2: plus batch). l2 in
// L2Plan's chunks as the step, part: scratch of part_count >= l2_scratch(...) values
// (one per chunk is used; unused, may be null, with one chunk per sample).
template <class XT>
const char* pgd_init_launch(XT* x, const XT* xo, int64_t* state, int64_t n, int64_t batch,
                            const PgdParams<compute_t<XT>>& p, bool l2, const Layout& L,
                            compute_t<XT>* part, int64_t part_count, int device, void* stream);

}  // namespace ebjdat
