// mala_propose and mala_accept: the element math and the per-sample decision of a
// Metropolis-adjusted Langevin step, shared by the CUDA kernels (kernels/mala.cu) and the
// host loops (csrc/mala.cpp), and the kernels' launchers. Same order of operations and
// roundings as ebjdat/ops/mala/spec.py:
//   propose: x_prop = x + step * g + noise_std * z with noise_std = sqrt(2 step) (in double,
//            then rounded to C, like every scalar), z the Philox normal of the element's
//            logical index: sgld_step's element with no clip and no clamp (sgld.cuh), so a
//            proposal equals sgld_step_ with noise_std = sqrt(2 step) bit for bit.
//   accept:  a_b = (e_b - e'_b) + (lq_rev_b - lq_fwd_b) in P (double for fp64 per-sample
//            tensors, float otherwise); u_b the uniform of element b of a call of B elements
//            (word b % 4 of counter offset + b / 4); accepted iff log(double(u_b)) <
//            double(a_b) (NaN: rejected); an accepted sample's row of x takes x_prop's (a
//            copy, no rounding). The log is double precision everywhere: the backends' logs
//            agree to an ulp or two of 1e-16, so a decision could differ only where a_b lies
//            that close to log u_b.
#pragma once

#include <math.h>

#include "common.cuh"
#include "dtype.cuh"
#include "launch.h"
#include "philox.cuh"
#include "sgld.cuh"

namespace ebjdat {

// The proposal's parameters as sgld_step's: step, noise sqrt(2 step), no clip, no clamp.
template <class C>
inline SgldParams<C> mala_propose_params(double step_size) {
  return SgldParams<C>{static_cast<C>(step_size), static_cast<C>(sqrt(2.0 * step_size)),
                       static_cast<C>(INFINITY), static_cast<C>(-INFINITY), static_cast<C>(INFINITY)};
}

// Whether sample b's proposal is accepted, from its per-sample values (storage type ET).
template <class ET>
EBJDAT_HD bool mala_accepts(uint64_t seed, uint64_t offset, int64_t b, ET e, ET e_prop, ET lq_fwd,
                            ET lq_rev) {
  using P = compute_t<ET>;
  const P a = (load_as<P>(e) - load_as<P>(e_prop)) + (load_as<P>(lq_rev) - load_as<P>(lq_fwd));
  const double u = (double)uniform01(word_of(seed, offset, (uint64_t)b));
  return log(u) < (double)a;
}

// x_prop[m] <- x[m] + step * g[m] + noise_std * z[logical(m)] for m < n, z at the generator
// state [seed, offset, done], whose offset advances by ceil(n / 4) on the device.
template <class XT, class GT>
const char* mala_propose_launch(XT* x_prop, const XT* x, const GT* g, int64_t* state, int64_t n,
                                const SgldParams<compute_t<XT>>& p, const Layout& L, int device,
                                void* stream);

// The decisions of `batch` samples of n / batch elements each: accepted[b], and x's row b
// from x_prop's where accepted; the generator's offset advances by ceil(batch / 4).
template <class XT, class ET>
const char* mala_accept_launch(XT* x, const XT* x_prop, const ET* e, const ET* e_prop,
                               const ET* lq_fwd, const ET* lq_rev, bool* accepted, int64_t* state,
                               int64_t n, int64_t batch, int device, void* stream);

}  // namespace ebjdat
