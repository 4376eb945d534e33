// pgd_step and pgd_init: per-element math and per-thread pieces of the per-sample l2
// reductions, shared by the CUDA kernels (kernels/pgd.cu) and the host loops
// (csrc/pgd.cpp). Same order of operations and roundings as ebjdat/ops/reference.py, in
// compute type C (double for fp64 x, float otherwise), scalars pre-rounded to C.
//
// linf step:  v = x + alpha * sign(g);  [eps] v = xo + clamp(v - xo, -eps, eps);  clamp.
// l2 step:    gn = sqrt(sum g^2) + 1e-10;  v = x + alpha * (g / gn);
//             [eps] d = v - xo, dn = sqrt(sum d^2), f = dn <= eps ? 1 : eps / dn,
//             v = xo + d * f;  clamp.
// linf init:  v = xo + eps * (u(r0) * 2 - 1);  clamp.
// l2 init:    z = the elements' normals, zn = sqrt(sum z^2), radius = u(r0) of counter
//             offset + ceil(n / 4) + b; v = xo + z * ((radius / zn) * eps);  clamp.
// Sums run over one sample (D consecutive memory elements); each thread t of T sums
// elements t, t + T, ... in order, then reduce.cuh combines the T partial sums in a fixed
// tree, so host and device reduce in the same order.
#pragma once

#include "common.cuh"
#include "dtype.cuh"
#include "philox.cuh"

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

template <class XT>
EBJDAT_HD XT pgd_init_linf_element(XT xo, uint32_t r0, const PgdParams<compute_t<XT>>& p) {
  using C = compute_t<XT>;
  const C u = static_cast<C>(uniform01(r0));
  const C v = load_as<C>(xo) + p.eps * (u * C(2) - C(1));
  return store_as<XT>(clamp_keep_nan(v, p.lo, p.hi));
}

// ---- l2 step -------------------------------------------------------------------------
template <class C> EBJDAT_HD C l2_eps_floor() { return static_cast<C>(1e-10); }

template <class C, class GT>  // thread tid's share of sum g^2
EBJDAT_HD C l2_grad_sq_partial(const GT* g, int64_t D, int tid, int T) {
  C acc = C(0);
  for (int64_t i = tid; i < D; i += T) {
    const C v = load_as<C>(g[i]);
    acc = acc + v * v;
  }
  return acc;
}

template <class C, class XT, class GT>  // v = x + alpha * (g / gn), before projection
EBJDAT_HD C l2_step_value(XT x, GT g, C gn, const PgdParams<C>& p) {
  return load_as<C>(x) + p.alpha * (load_as<C>(g) / gn);
}

template <class C, class XT, class GT>  // thread tid's share of sum (v - xo)^2
EBJDAT_HD C l2_diff_sq_partial(const XT* x, const GT* g, const XT* xo, int64_t D, int tid,
                               int T, C gn, const PgdParams<C>& p) {
  C acc = C(0);
  for (int64_t i = tid; i < D; i += T) {
    const C d = l2_step_value<C>(x[i], g[i], gn, p) - load_as<C>(xo[i]);
    acc = acc + d * d;
  }
  return acc;
}

template <class C>  // the projection factor min(1, eps / dn) as the reference writes it
EBJDAT_HD C l2_factor(C dn, const PgdParams<C>& p) {
  return dn <= p.eps ? C(1) : p.eps / dn;
}

template <class XT, class GT>
EBJDAT_HD XT l2_step_element(XT x, GT g, XT xo, compute_t<XT> gn, compute_t<XT> f,
                             const PgdParams<compute_t<XT>>& p) {
  using C = compute_t<XT>;
  C v = l2_step_value<C>(x, g, gn, p);
  if (p.has_eps) {
    const C o = load_as<C>(xo);
    v = o + (v - o) * f;
  }
  return store_as<XT>(clamp_keep_nan(v, p.lo, p.hi));
}

// ---- l2 init -------------------------------------------------------------------------
// z of memory element m: the normal of its logical index (philox.cuh).
template <class C>
EBJDAT_HD C l2_init_z(uint64_t seed, uint64_t offset, const Layout& L, int64_t m) {
  return static_cast<C>(normal_of(seed, offset, (uint64_t)logical_index(L, m)));
}

template <class C>  // thread tid's share of sum z^2 over sample b
EBJDAT_HD C l2_init_sq_partial(uint64_t seed, uint64_t offset, const Layout& L, int64_t b,
                               int64_t D, int tid, int T) {
  C acc = C(0);
  for (int64_t i = tid; i < D; i += T) {
    const C z = l2_init_z<C>(seed, offset, L, b * D + i);
    acc = acc + z * z;
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

}  // namespace ebjdat
