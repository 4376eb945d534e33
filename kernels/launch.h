// Host-callable launchers of the CUDA kernels (defined in kernels/sgld.cu and
// kernels/pgd.cu, explicitly instantiated for every storage type pair). Plain C++: csrc/
// includes this without CUDA headers. Each launcher makes `device` current, launches on
// `stream` (the caller's cudaStream_t), allocates nothing, never synchronises, and returns
// nullptr on success or CUDA's error string.
#pragma once

#include "common.cuh"
#include "dtype.cuh"
#include "pgd.cuh"
#include "sgld.cuh"

namespace ebjdat {

// x[m] <- sgld(x[m], g[m], z[logical(m)]) for m < n; noise: draw z at the generator
// state [seed, offset, done] and advance its offset by n on the device.
template <class XT, class GT>
const char* sgld_step_launch(XT* x, const GT* g, int64_t* state, int64_t n,
                             const SgldParams<compute_t<XT>>& p, bool noise, const Layout& L,
                             int device, void* stream);

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

// Every storage type of x, and every (x, grad) pair, for explicit instantiation.
#define EBJDAT_FOR_X(M) M(float) M(double) M(::ebjdat::f16) M(::ebjdat::bf16)
#define EBJDAT_FOR_G_(M, X) M(X, float) M(X, double) M(X, ::ebjdat::f16) M(X, ::ebjdat::bf16)
#define EBJDAT_FOR_XG(M)                                                       \
  EBJDAT_FOR_G_(M, float) EBJDAT_FOR_G_(M, double) EBJDAT_FOR_G_(M, ::ebjdat::f16) \
  EBJDAT_FOR_G_(M, ::ebjdat::bf16)
