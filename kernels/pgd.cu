// pgd_step and pgd_init kernels.
//  * linf: elementwise, chunks of kElemsPerThread<XT> consecutive elements per thread
//    (16-byte accesses when aligned), grid-striding (like sgld.cu).
//  * l2: one block of l2_threads(D) threads per sample of D consecutive elements (the
//    step: exactly one block per sample; the random start grid-strides over samples, which
//    keeps its generator atomics few): sum pass(es) reduced by block_sum, then the write
//    pass. No scratch memory: values are recomputed in each pass.
// Element math and per-thread partial sums come from kernels/pgd.cuh, shared with the
// host loops in csrc/pgd.cpp.
#include "device.cuh"
#include "launch.h"

namespace ebjdat {

template <class XT, class GT>
__global__ void __launch_bounds__(kThreads)
pgd_step_linf_kernel(XT* __restrict__ x, const GT* __restrict__ g, const XT* __restrict__ xo,
                     int64_t n, PgdParams<compute_t<XT>> p, bool aligned) {
  constexpr int N = kElemsPerThread<XT>;
  const int64_t chunks = (n + N - 1) / N;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < chunks; k += stride) {
    const int64_t base = k * N;
    const bool full = aligned && base + N <= n;
    XT xs[N], os[N];
    GT gs[N];
    load_chunk<N>(x, base, n, full, xs);
    load_chunk<N>(g, base, n, full, gs);
    load_chunk<N>(xo, base, n, full, os);
#pragma unroll
    for (int j = 0; j < N; ++j)
      if (full || base + j < n) xs[j] = pgd_step_linf_element<XT, GT>(xs[j], gs[j], os[j], p);
    store_chunk<N>(x, base, n, full, xs);
  }
}

template <class XT, class GT>
__global__ void __launch_bounds__(kThreads)
pgd_step_l2_kernel(XT* __restrict__ x, const GT* __restrict__ g, const XT* __restrict__ xo,
                   int64_t D, PgdParams<compute_t<XT>> p) {
  using C = compute_t<XT>;
  const int tid = threadIdx.x, T = blockDim.x;
  const int64_t b = blockIdx.x;   // one block per sample: nothing else stays live across the
  XT* xb = x + b * D;             // slow-path calls of double division and sqrt
  const GT* gb = g + b * D;
  const XT* ob = xo + b * D;
  const C gn = sqrt_rn(block_sum(l2_grad_sq_partial<C>(gb, D, tid, T))) + l2_eps_floor<C>();
  C f = C(1);
  if (p.has_eps)
    f = l2_factor(sqrt_rn(block_sum(l2_diff_sq_partial<C>(xb, gb, ob, D, tid, T, gn, p))), p);
  for (int64_t i = tid; i < D; i += T) xb[i] = l2_step_element<XT, GT>(xb[i], gb[i], ob[i], gn, f, p);
}

template <class XT>
__global__ void __launch_bounds__(kThreads)
pgd_init_linf_kernel(XT* __restrict__ x, const XT* __restrict__ xo, int64_t* state, int64_t n,
                     PgdParams<compute_t<XT>> p, Layout L, bool aligned) {
  constexpr int N = kElemsPerThread<XT>;
  uint64_t seed, offset;
  read_generator(state, seed, offset);
  const int64_t chunks = (n + N - 1) / N;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < chunks; k += stride) {
    const int64_t base = k * N;
    const bool full = aligned && base + N <= n;
    XT xs[N], os[N];
    load_chunk<N>(xo, base, n, full, os);
    LogicalWalk walk(L, base);
#pragma unroll
    for (int j = 0; j < N; ++j) {
      if (!full && base + j >= n) break;
      const uint32_t r = word_of(seed, offset, (uint64_t)walk.get());
      walk.next();
      xs[j] = pgd_init_linf_element<XT>(os[j], r, p);
    }
    store_chunk<N>(x, base, n, full, xs);
  }
  finish_generator(state, offset, counters_for((uint64_t)n));
}

template <class XT>
__global__ void __launch_bounds__(kThreads)
pgd_init_l2_kernel(XT* __restrict__ x, const XT* __restrict__ xo, int64_t* state, int64_t n,
                   int64_t batch, int64_t D, PgdParams<compute_t<XT>> p, Layout L) {
  using C = compute_t<XT>;
  uint64_t seed, offset;
  read_generator(state, seed, offset);
  const int tid = threadIdx.x, T = blockDim.x;
  for (int64_t b = blockIdx.x; b < batch; b += gridDim.x) {
    const C zsq = block_sum(l2_init_sq_partial<C>(seed, offset, L, b, D, tid, T));
    const C scale = l2_init_scale<C>(seed, offset, n, b, zsq, p);
    for (int64_t i = tid; i < D; i += T) {
      const int64_t m = b * D + i;
      x[m] = l2_init_element<XT>(xo[m], l2_init_z<C>(seed, offset, L, m), scale, p);
    }
  }
  finish_generator(state, offset, counters_for((uint64_t)n) + (uint64_t)batch);
}

template <class XT, class GT>
const char* pgd_step_launch(XT* x, const GT* g, const XT* xo, int64_t n, int64_t batch,
                            const PgdParams<compute_t<XT>>& p, bool l2, int device,
                            void* stream) {
  if (n <= 0) return nullptr;
  DeviceGuard guard(device);
  if (guard.err != cudaSuccess) return cudaGetErrorString(guard.err);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (l2) {
    if (batch > 0x7fffffff) return "pgd_step_ l2: more than 2**31 - 1 samples";
    const int64_t D = n / batch;
    pgd_step_l2_kernel<XT, GT><<<(unsigned)batch, l2_threads(D), 0, s>>>(x, g, xo, D, p);
  } else {
    constexpr int N = kElemsPerThread<XT>;
    const bool aligned = aligned16(x) && aligned16(g) && aligned16(xo);
    const unsigned blocks = grid_for((n + N - 1) / N, device);
    pgd_step_linf_kernel<XT, GT><<<blocks, kThreads, 0, s>>>(x, g, xo, n, p, aligned);
  }
  return launch_status();
}

template <class XT>
const char* pgd_init_launch(XT* x, const XT* xo, int64_t* state, int64_t n, int64_t batch,
                            const PgdParams<compute_t<XT>>& p, bool l2, const Layout& L,
                            int device, void* stream) {
  if (n <= 0) return nullptr;
  DeviceGuard guard(device);
  if (guard.err != cudaSuccess) return cudaGetErrorString(guard.err);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (l2) {
    const int64_t D = n / batch;
    const unsigned blocks = grid_for(batch * kThreads, device);
    pgd_init_l2_kernel<XT><<<blocks, l2_threads(D), 0, s>>>(x, xo, state, n, batch, D, p, L);
  } else {
    constexpr int N = kElemsPerThread<XT>;
    const bool aligned = aligned16(x) && aligned16(xo);
    const unsigned blocks = grid_for((n + N - 1) / N, device);
    pgd_init_linf_kernel<XT><<<blocks, kThreads, 0, s>>>(x, xo, state, n, p, L, aligned);
  }
  return launch_status();
}

#define EBJDAT_INSTANTIATE_PGD_STEP(X, G)                                               \
  template const char* pgd_step_launch<X, G>(X*, const G*, const X*, int64_t, int64_t,  \
                                             const PgdParams<compute_t<X>>&, bool, int, \
                                             void*);
#define EBJDAT_INSTANTIATE_PGD_INIT(X)                                                  \
  template const char* pgd_init_launch<X>(X*, const X*, int64_t*, int64_t, int64_t,     \
                                          const PgdParams<compute_t<X>>&, bool,         \
                                          const Layout&, int, void*);
EBJDAT_FOR_XG(EBJDAT_INSTANTIATE_PGD_STEP)
EBJDAT_FOR_X(EBJDAT_INSTANTIATE_PGD_INIT)

}  // namespace ebjdat
