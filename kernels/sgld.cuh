// sgld_step: the per-element Langevin update, shared by the CUDA kernel (kernels/sgld.cu)
// and the host loop (csrc/sgld.cpp), and the kernel's launcher. Same order of operations and
// roundings as ebjdat/ops/sgld/spec.py::sgld_step:
//   g = clamp(grad, -clip, clip)          (clip = +inf: identity, NaN kept)
//   v = x + step * g
//   v = v + noise_std * z                 (only when noise is drawn; z from Philox, fp32)
//   x = round_to_dtype(clamp(v, lo, hi))
// in compute type C (double for fp64 x, float otherwise); scalars pre-rounded to C.
#pragma once

#include "common.cuh"
#include "dtype.cuh"
#include "launch.h"
#include "philox.cuh"

namespace ebjdat {

template <class C>
struct SgldParams {
  C step, noise_std, clip, lo, hi;
};

template <class C>
EBJDAT_HD C sgld_step_value(C x, C g, float z, bool noise, const SgldParams<C>& p) {
  g = clamp_keep_nan(g, -p.clip, p.clip);
  C v = x + p.step * g;
  if (noise) v = v + p.noise_std * static_cast<C>(z);
  return clamp_keep_nan(v, p.lo, p.hi);
}

// One element in storage types: x of XT updated from grad of GT.
template <class XT, class GT>
EBJDAT_HD XT sgld_step_element(XT x, GT g, float z, bool noise,
                               const SgldParams<compute_t<XT>>& p) {
  using C = compute_t<XT>;
  return store_as<XT>(sgld_step_value<C>(load_as<C>(x), load_as<C>(g), z, noise, p));
}

// x[m] <- sgld(x[m], g[m], z[logical(m)]) for m < n; noise: draw z at the generator
// state [seed, offset, done] and advance its offset by ceil(n / 4) on the device.
template <class XT, class GT>
const char* sgld_step_launch(XT* x, const GT* g, int64_t* state, int64_t n,
                             const SgldParams<compute_t<XT>>& p, bool noise, const Layout& L,
                             int device, void* stream);

}  // namespace ebjdat
