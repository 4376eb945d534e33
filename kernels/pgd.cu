// pgd_step and pgd_init kernels.
//  * linf: elementwise, chunks of kElemsPerThread<XT> consecutive elements per thread
//    (16-byte accesses when aligned), grid-striding, whole chunks before the tail (like sgld.cu).
//  * l2 step: L2Plan's chunks (kernels/pgd.cuh), one block each: a sum pass and a write
//    pass over 16-byte vectors. With one chunk per sample a single launch; with more, a
//    launch of sums into the caller's scratch and one that combines them and writes.
//  * l2 random start: the l2 step's plan, the normals drawn a Philox call per four
//    elements: a sum pass of z^2 and a write pass, the normals recomputed in each. With
//    one chunk per sample the blocks grid-stride over the samples (few generator atomics);
//    with more, a launch of chunk sums into the scratch and one that combines and writes.
// Element math and per-thread partial sums come from kernels/pgd.cuh, shared with the
// host loops in csrc/pgd.cpp.
#include "device.cuh"
#include "launch.h"
#include "pgd.cuh"

namespace ebjdat {

// One chunk of the linf step; FULL: whole and aligned, no bound checks (as sgld_chunk).
template <bool FULL, class XT, class GT, int N>
__device__ __forceinline__ void pgd_linf_chunk(XT* __restrict__ x, const GT* __restrict__ g,
                                               const XT* __restrict__ xo, int64_t base, int64_t n,
                                               const PgdParams<compute_t<XT>>& p) {
  XT xs[N], os[N];
  GT gs[N];
  load_chunk<N>(x, base, n, FULL, xs);
  load_chunk<N>(g, base, n, FULL, gs);
  load_chunk<N>(xo, base, n, FULL, os);
#pragma unroll
  for (int j = 0; j < N; ++j)
    if (FULL || base + j < n) xs[j] = pgd_step_linf_element<XT, GT>(xs[j], gs[j], os[j], p);
  store_chunk<N>(x, base, n, FULL, xs);
}

template <class XT, class GT>
__global__ void __launch_bounds__(kThreads)
pgd_step_linf_kernel(XT* __restrict__ x, const GT* __restrict__ g, const XT* __restrict__ xo,
                     int64_t n, PgdParams<compute_t<XT>> p, bool aligned) {
  constexpr int N = kElemsPerThread<XT>;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  for (const int64_t whole = aligned ? n / N : 0; k < whole; k += stride)   // then the tail
    pgd_linf_chunk<true, XT, GT, N>(x, g, xo, k * N, n, p);
  for (const int64_t chunks = (n + N - 1) / N; k < chunks; k += stride)
    pgd_linf_chunk<false, XT, GT, N>(x, g, xo, k * N, n, p);
}

// The l2 step's pieces (plan and math: kernels/pgd.cuh). A chunk is elements [lo, hi) of
// the flat tensor; `aligned`: every pointer is 16-byte aligned and every vector starts at
// a multiple of N (D and the chunk length are), so whole vectors move as 16-byte words.
template <class XT, class GT>
__device__ __forceinline__ L2Sums<compute_t<XT>> l2_chunk_sums(
    const XT* __restrict__ x, const GT* __restrict__ g, const XT* __restrict__ xo, int64_t lo,
    int64_t hi, bool aligned, bool has_eps) {
  using C = compute_t<XT>;
  constexpr int N = kElemsPerThread<XT>;
  L2Sums<C> s{C(0), C(0), C(0)};
  for (int64_t base = lo + (int64_t)threadIdx.x * N; base < hi; base += (int64_t)blockDim.x * N) {
    const bool full = aligned && base + N <= hi;
    XT xs[N] = {}, os[N] = {};
    GT gs[N];
    load_chunk<N>(g, base, hi, full, gs);
    if (has_eps) {
      load_chunk<N>(x, base, hi, full, xs);
      load_chunk<N>(xo, base, hi, full, os);
    }
    l2_accumulate<C, N>(s, xs, gs, os, base + N <= hi ? N : (int)(hi - base), has_eps);
  }
  s.gg = block_sum(s.gg);
  if (has_eps) {
    s.dg = block_sum(s.dg);
    s.dd = block_sum(s.dd);
  }
  return s;
}

template <class XT, class GT>
__device__ __forceinline__ void l2_chunk_write(XT* __restrict__ x, const GT* __restrict__ g,
                                               const XT* __restrict__ xo, int64_t lo, int64_t hi,
                                               bool aligned, compute_t<XT> gn, compute_t<XT> f,
                                               const PgdParams<compute_t<XT>>& p) {
  constexpr int N = kElemsPerThread<XT>;
  for (int64_t base = lo + (int64_t)threadIdx.x * N; base < hi; base += (int64_t)blockDim.x * N) {
    const bool full = aligned && base + N <= hi;
    XT xs[N], os[N] = {};
    GT gs[N];
    load_chunk<N>(x, base, hi, full, xs);
    load_chunk<N>(g, base, hi, full, gs);
    if (p.has_eps) load_chunk<N>(xo, base, hi, full, os);
#pragma unroll
    for (int j = 0; j < N; ++j)
      if (full || base + j < hi) xs[j] = l2_step_element<XT, GT>(xs[j], gs[j], os[j], gn, f, p);
    store_chunk<N>(x, base, hi, full, xs);
  }
}

// One chunk per sample (splits == 1): block b sums sample b, then writes it.
template <class XT, class GT>
__global__ void __launch_bounds__(kThreads)
pgd_step_l2_kernel(XT* __restrict__ x, const GT* __restrict__ g, const XT* __restrict__ xo,
                   int64_t D, PgdParams<compute_t<XT>> p, bool aligned) {
  using C = compute_t<XT>;
  const int64_t lo = (int64_t)blockIdx.x * D, hi = lo + D;
  const L2Sums<C> s = l2_chunk_sums<XT, GT>(x, g, xo, lo, hi, aligned, p.has_eps);
  C gn, f;
  l2_step_scalars(s, p, gn, f);
  l2_chunk_write<XT, GT>(x, g, xo, lo, hi, aligned, gn, f, p);
}

// splits > 1, first launch: block k = b * splits + c writes chunk c of sample b's three
// sums to part[3k .. 3k + 2].
template <class XT, class GT>
__global__ void __launch_bounds__(kThreads)
pgd_step_l2_partial_kernel(const XT* __restrict__ x, const GT* __restrict__ g,
                           const XT* __restrict__ xo, int64_t D, int64_t chunk, int64_t splits,
                           bool has_eps, bool aligned, compute_t<XT>* __restrict__ part) {
  const int64_t k = blockIdx.x, b = k / splits;
  const int64_t lo = b * D + (k - b * splits) * chunk, end = b * D + D;
  const L2Sums<compute_t<XT>> s =
      l2_chunk_sums<XT, GT>(x, g, xo, lo, lo + chunk < end ? lo + chunk : end, aligned, has_eps);
  if (threadIdx.x == 0) {
    part[3 * k] = s.gg;
    part[3 * k + 1] = s.dg;
    part[3 * k + 2] = s.dd;
  }
}

// splits > 1, second launch: block k combines sample b's chunk sums (thread t takes chunks
// t, t + T, ..., then block_sum), then writes chunk c.
template <class XT, class GT>
__global__ void __launch_bounds__(kThreads)
pgd_step_l2_finish_kernel(XT* __restrict__ x, const GT* __restrict__ g,
                          const XT* __restrict__ xo, int64_t D, int64_t chunk, int64_t splits,
                          PgdParams<compute_t<XT>> p, bool aligned,
                          const compute_t<XT>* __restrict__ part) {
  using C = compute_t<XT>;
  const int64_t k = blockIdx.x, b = k / splits;
  const C* pb = part + 3 * b * splits;
  L2Sums<C> s{C(0), C(0), C(0)};
  for (int64_t c = threadIdx.x; c < splits; c += blockDim.x) {
    s.gg = s.gg + pb[3 * c];
    s.dg = s.dg + pb[3 * c + 1];
    s.dd = s.dd + pb[3 * c + 2];
  }
  s.gg = block_sum(s.gg);
  s.dg = block_sum(s.dg);
  s.dd = block_sum(s.dd);
  C gn, f;
  l2_step_scalars(s, p, gn, f);
  const int64_t lo = b * D + (k - b * splits) * chunk, end = b * D + D;
  l2_chunk_write<XT, GT>(x, g, xo, lo, lo + chunk < end ? lo + chunk : end, aligned, gn, f, p);
}

// One chunk of the linf random start; FULL as in pgd_linf_chunk.
template <bool FULL, class XT, int N>
__device__ __forceinline__ void pgd_init_linf_chunk(XT* __restrict__ x, const XT* __restrict__ xo,
                                                    int64_t base, int64_t n, uint64_t seed,
                                                    uint64_t offset, const Layout& L,
                                                    const PgdParams<compute_t<XT>>& p) {
  XT xs[N], os[N];
  load_chunk<N>(xo, base, n, FULL, os);
  uint32_t rs[N] = {};
  words_chunk<N>(seed, offset, L, base, n, rs);
#pragma unroll
  for (int j = 0; j < N; ++j) {
    if (!FULL && base + j >= n) break;
    xs[j] = pgd_init_linf_element<XT>(os[j], rs[j], p);
  }
  store_chunk<N>(x, base, n, FULL, xs);
}

// CL (channels_last) is a template flag, as in sgld.cu: a kernel holds one word path (a
// Philox call per four elements in logical order, one per element along a channels_last walk).
template <class XT, bool CL>
__global__ void __launch_bounds__(kThreads)
pgd_init_linf_kernel(XT* __restrict__ x, const XT* __restrict__ xo, int64_t* state, int64_t n,
                     PgdParams<compute_t<XT>> p, Layout L, bool aligned) {
  L.channels_last = CL;
  constexpr int N = kElemsPerThread<XT>;
  uint64_t seed, offset;
  read_generator(state, seed, offset);
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  for (const int64_t whole = aligned ? n / N : 0; k < whole; k += stride)   // then the tail
    pgd_init_linf_chunk<true, XT, N>(x, xo, k * N, n, seed, offset, L, p);
  for (const int64_t chunks = (n + N - 1) / N; k < chunks; k += stride)
    pgd_init_linf_chunk<false, XT, N>(x, xo, k * N, n, seed, offset, L, p);
  finish_generator(state, offset, counters_for((uint64_t)n));
}

// The l2 random start's write of the chunk [lo, hi): z drawn again by the same vectors
// as the sum (l2_init_sq_partial), x = clamp(xo + z * scale); whole aligned vectors inside
// the chunk move as 16-byte words, the others element by element (only those inside).
template <class XT>
__device__ __forceinline__ void l2_init_chunk_write(XT* __restrict__ x, const XT* __restrict__ xo,
                                                   int64_t lo, int64_t hi, int64_t n, uint64_t seed,
                                                   uint64_t offset, const Layout& L, bool aligned,
                                                   compute_t<XT> scale, const PgdParams<compute_t<XT>>& p) {
  constexpr int N = kElemsPerThread<XT>;
  for (int64_t base = (lo / N + threadIdx.x) * N; base < hi; base += (int64_t)blockDim.x * N) {
    float z[N] = {};
    noise_chunk<N>(seed, offset, L, base, n, z);
    if (aligned && base >= lo && base + N <= hi) {
      XT os[N], xs[N];
      load_chunk<N>(xo, base, n, true, os);
#pragma unroll
      for (int j = 0; j < N; ++j) xs[j] = l2_init_element<XT>(os[j], (compute_t<XT>)z[j], scale, p);
      store_chunk<N>(x, base, n, true, xs);
    } else {
#pragma unroll
      for (int j = 0; j < N; ++j)
        if (base + j >= lo && base + j < hi)
          x[base + j] = l2_init_element<XT>(xo[base + j], (compute_t<XT>)z[j], scale, p);
    }
  }
}

// One chunk per sample (splits == 1): block k takes samples k, k + grid, ... (a grid of
// at most a full wave, so few blocks count themselves on the generator).
template <class XT, bool CL>
__global__ void __launch_bounds__(kThreads)
pgd_init_l2_kernel(XT* __restrict__ x, const XT* __restrict__ xo, int64_t* state, int64_t n,
                   int64_t batch, int64_t D, PgdParams<compute_t<XT>> p, Layout L, bool aligned) {
  L.channels_last = CL;   // a template flag, as in sgld.cu: one noise path per kernel
  using C = compute_t<XT>;
  constexpr int N = kElemsPerThread<XT>;
  uint64_t seed, offset;
  read_generator(state, seed, offset);
  for (int64_t b = blockIdx.x; b < batch; b += gridDim.x) {
    const int64_t lo = b * D, hi = lo + D;
    const C zsq = block_sum(l2_init_sq_partial<C, N>(seed, offset, L, lo, hi, n, threadIdx.x, blockDim.x));
    l2_init_chunk_write<XT>(x, xo, lo, hi, n, seed, offset, L, aligned,
                            l2_init_scale<C>(seed, offset, n, b, zsq, p), p);
  }
  finish_generator(state, offset, counters_for((uint64_t)n) + (uint64_t)batch);
}

// splits > 1, first launch: block k = b * splits + c writes chunk c's sum of z^2 to
// part[k]. It reads the generator and leaves it: the second launch advances it.
template <class XT, bool CL>
__global__ void __launch_bounds__(kThreads)
pgd_init_l2_partial_kernel(const int64_t* state, int64_t n, int64_t D, int64_t chunk,
                           int64_t splits, Layout L, compute_t<XT>* __restrict__ part) {
  L.channels_last = CL;
  using C = compute_t<XT>;
  uint64_t seed, offset;
  read_generator(state, seed, offset);
  const int64_t k = blockIdx.x, b = k / splits;
  const int64_t lo = b * D + (k - b * splits) * chunk, end = b * D + D;
  const C s = block_sum(l2_init_sq_partial<C, kElemsPerThread<XT>>(
      seed, offset, L, lo, lo + chunk < end ? lo + chunk : end, n, threadIdx.x, blockDim.x));
  if (threadIdx.x == 0) part[k] = s;
}

// splits > 1, second launch: block k combines sample b's chunk sums (thread t takes
// chunks t, t + T, ..., then block_sum), then writes chunk c; the last block advances.
template <class XT, bool CL>
__global__ void __launch_bounds__(kThreads)
pgd_init_l2_finish_kernel(XT* __restrict__ x, const XT* __restrict__ xo, int64_t* state,
                          int64_t n, int64_t batch, int64_t D, int64_t chunk, int64_t splits,
                          PgdParams<compute_t<XT>> p, Layout L, bool aligned,
                          const compute_t<XT>* __restrict__ part) {
  L.channels_last = CL;
  using C = compute_t<XT>;
  uint64_t seed, offset;
  read_generator(state, seed, offset);
  const int64_t k = blockIdx.x, b = k / splits;
  C zsq = C(0);
  for (int64_t c = threadIdx.x; c < splits; c += blockDim.x) zsq = zsq + part[b * splits + c];
  zsq = block_sum(zsq);
  const int64_t lo = b * D + (k - b * splits) * chunk, end = b * D + D;
  l2_init_chunk_write<XT>(x, xo, lo, lo + chunk < end ? lo + chunk : end, n, seed, offset, L, aligned,
                          l2_init_scale<C>(seed, offset, n, b, zsq, p), p);
  finish_generator(state, offset, counters_for((uint64_t)n) + (uint64_t)batch);
}

template <class XT, class GT>
const char* pgd_step_launch(XT* x, const GT* g, const XT* xo, int64_t n, int64_t batch,
                            const PgdParams<compute_t<XT>>& p, bool l2,
                            compute_t<XT>* part, int64_t part_count, int device, void* stream) {
  if (n <= 0) return nullptr;
  DeviceGuard guard(device);
  if (guard.err != cudaSuccess) return cudaGetErrorString(guard.err);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (l2) {
    constexpr int N = kElemsPerThread<XT>;
    const int64_t D = n / batch;
    const L2Plan plan = l2_plan(batch, D, N);
    const int64_t blocks = batch * plan.splits;
    if (blocks > 0x7fffffff) return "pgd_step_ l2: more than 2**31 - 1 blocks";
    const bool aligned = aligned16(x) && aligned16(g) && aligned16(xo) && D % N == 0 &&
                         plan.chunk % N == 0;
    if (plan.splits == 1) {
      pgd_step_l2_kernel<XT, GT><<<(unsigned)batch, plan.threads, 0, s>>>(x, g, xo, D, p, aligned);
    } else {
      if (part == nullptr || part_count < 3 * blocks) return "pgd_step_ l2: scratch too small";
      pgd_step_l2_partial_kernel<XT, GT><<<(unsigned)blocks, plan.threads, 0, s>>>(
          x, g, xo, D, plan.chunk, plan.splits, p.has_eps, aligned, part);
      pgd_step_l2_finish_kernel<XT, GT><<<(unsigned)blocks, plan.threads, 0, s>>>(
          x, g, xo, D, plan.chunk, plan.splits, p, aligned, part);
    }
  } else {
    constexpr int N = kElemsPerThread<XT>;
    const bool aligned = aligned16(x) && aligned16(g) && aligned16(xo);
    constexpr auto k = pgd_step_linf_kernel<XT, GT>;
    k<<<grid_for<k>((n + N - 1) / N, device), kThreads, 0, s>>>(x, g, xo, n, p, aligned);
  }
  return launch_status();
}

// The l2 random start's launches for one layout (CL): one kernel with one chunk per
// sample, else the chunk sums and the combining write.
template <class XT, bool CL>
const char* pgd_init_l2_launch(XT* x, const XT* xo, int64_t* state, int64_t n, int64_t batch,
                               const PgdParams<compute_t<XT>>& p, const Layout& L,
                               compute_t<XT>* part, int64_t part_count, int device, cudaStream_t s) {
  const int64_t D = n / batch;
  const L2Plan plan = l2_plan(batch, D, kElemsPerThread<XT>);
  const bool aligned = aligned16(x) && aligned16(xo);
  if (plan.splits == 1) {
    constexpr auto k = pgd_init_l2_kernel<XT, CL>;
    k<<<grid_for<k>(batch * plan.threads, device, plan.threads), plan.threads, 0, s>>>(
        x, xo, state, n, batch, D, p, L, aligned);
  } else {
    const int64_t blocks = batch * plan.splits;
    if (part == nullptr || part_count < blocks) return "pgd_init_ l2: scratch too small";
    pgd_init_l2_partial_kernel<XT, CL><<<(unsigned)blocks, plan.threads, 0, s>>>(
        state, n, D, plan.chunk, plan.splits, L, part);
    pgd_init_l2_finish_kernel<XT, CL><<<(unsigned)blocks, plan.threads, 0, s>>>(
        x, xo, state, n, batch, D, plan.chunk, plan.splits, p, L, aligned, part);
  }
  return launch_status();
}

template <class XT>
const char* pgd_init_launch(XT* x, const XT* xo, int64_t* state, int64_t n, int64_t batch,
                            const PgdParams<compute_t<XT>>& p, bool l2, const Layout& L,
                            compute_t<XT>* part, int64_t part_count, int device, void* stream) {
  if (n <= 0) return nullptr;
  DeviceGuard guard(device);
  if (guard.err != cudaSuccess) return cudaGetErrorString(guard.err);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (l2) {
    if (L.channels_last)
      return pgd_init_l2_launch<XT, true>(x, xo, state, n, batch, p, L, part, part_count, device, s);
    return pgd_init_l2_launch<XT, false>(x, xo, state, n, batch, p, L, part, part_count, device, s);
  } else {
    constexpr int N = kElemsPerThread<XT>;
    const bool aligned = aligned16(x) && aligned16(xo);
    if (L.channels_last) {
      constexpr auto k = pgd_init_linf_kernel<XT, true>;
      k<<<grid_for<k>((n + N - 1) / N, device), kThreads, 0, s>>>(x, xo, state, n, p, L, aligned);
    } else {
      constexpr auto k = pgd_init_linf_kernel<XT, false>;
      k<<<grid_for<k>((n + N - 1) / N, device), kThreads, 0, s>>>(x, xo, state, n, p, L, aligned);
    }
  }
  return launch_status();
}

#define EBJDAT_INSTANTIATE_PGD_STEP(X, G)                                               \
  template const char* pgd_step_launch<X, G>(X*, const G*, const X*, int64_t, int64_t,  \
                                             const PgdParams<compute_t<X>>&, bool,      \
                                             compute_t<X>*, int64_t, int, void*);
#define EBJDAT_INSTANTIATE_PGD_INIT(X)                                                  \
  template const char* pgd_init_launch<X>(X*, const X*, int64_t*, int64_t, int64_t,     \
                                          const PgdParams<compute_t<X>>&, bool,         \
                                          const Layout&, compute_t<X>*, int64_t, int, void*);
EBJDAT_FOR_XG(EBJDAT_INSTANTIATE_PGD_STEP)
EBJDAT_FOR_X(EBJDAT_INSTANTIATE_PGD_INIT)

}  // namespace ebjdat
