// mala_propose and mala_accept kernels (math: kernels/mala.cuh).
//  * propose: sgld_step's elementwise kernel writing x_prop from x: chunks of
//    kElemsPerThread<XT> consecutive elements per thread (16-byte accesses when aligned),
//    grid-striding, whole chunks before the tail; CL (channels_last) a template flag, so a
//    kernel holds one noise path (a Philox call per 4 elements in logical order, one per
//    element along a channels_last walk).
//  * accept: work item (b, t) is tile t of sample b's row, kThreads chunks; each block
//    grid-strides over the items, every thread takes the sample's decision (the same
//    Philox word and log in every lane: no divergence, no shared memory), thread 0 of
//    tile 0 writes it, and the tile is copied from x_prop only when accepted.
#include "device.cuh"
#include "launch.h"
#include "mala.cuh"

namespace ebjdat {

// One chunk of N elements from base; FULL: whole and aligned, no bound checks (as sgld_chunk).
// x_prop and x are not __restrict__: x_prop may be x (an in-place step).
template <bool FULL, class XT, class GT, int N>
__device__ __forceinline__ void mala_propose_chunk(XT* x_prop, const XT* x, const GT* __restrict__ g,
                                                   int64_t base, int64_t n, uint64_t seed, uint64_t offset,
                                                   const Layout& L, const SgldParams<compute_t<XT>>& p) {
  XT xs[N];
  GT gs[N];
  load_chunk<N>(x, base, n, FULL, xs);
  load_chunk<N>(g, base, n, FULL, gs);
  float zs[N] = {};
  noise_chunk<N>(seed, offset, L, base, n, zs);
#pragma unroll
  for (int j = 0; j < N; ++j) {
    if (!FULL && base + j >= n) break;
    xs[j] = sgld_step_element<XT, GT>(xs[j], gs[j], zs[j], true, p);
  }
  store_chunk<N>(x_prop, base, n, FULL, xs);
}

template <class XT, class GT, bool CL>
__global__ void __launch_bounds__(kThreads)
mala_propose_kernel(XT* x_prop, const XT* x, const GT* __restrict__ g, int64_t* state, int64_t n,
                    SgldParams<compute_t<XT>> p, Layout L, bool aligned) {
  L.channels_last = CL;
  constexpr int N = kElemsPerThread<XT>;
  uint64_t seed, offset;
  read_generator(state, seed, offset);
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  for (const int64_t whole = aligned ? n / N : 0; k < whole; k += stride)   // then the tail
    mala_propose_chunk<true, XT, GT, N>(x_prop, x, g, k * N, n, seed, offset, L, p);
  for (const int64_t chunks = (n + N - 1) / N; k < chunks; k += stride)
    mala_propose_chunk<false, XT, GT, N>(x_prop, x, g, k * N, n, seed, offset, L, p);
  finish_generator(state, offset, counters_for((uint64_t)n));
}

template <class XT, class ET>
__global__ void __launch_bounds__(kThreads)
mala_accept_kernel(XT* __restrict__ x, const XT* __restrict__ x_prop, const ET* e, const ET* e_prop,
                   const ET* lq_fwd, const ET* lq_rev, bool* accepted, int64_t* state, int64_t batch,
                   int64_t D, int64_t tiles, bool aligned) {
  constexpr int N = kElemsPerThread<XT>;
  constexpr int64_t kTile = (int64_t)kThreads * N;
  uint64_t seed, offset;
  read_generator(state, seed, offset);
  for (int64_t k = blockIdx.x; k < batch * tiles; k += gridDim.x) {
    const int64_t b = k / tiles, t = k - b * tiles;
    const bool take = mala_accepts<ET>(seed, offset, b, e[b], e_prop[b], lq_fwd[b], lq_rev[b]);
    if (t == 0 && threadIdx.x == 0) accepted[b] = take;
    const int64_t end = (b + 1) * D, base = b * D + t * kTile + (int64_t)threadIdx.x * N;
    if (!take || base >= end) continue;
    const bool full = aligned && base + N <= end;
    XT v[N];
    load_chunk<N>(x_prop, base, end, full, v);
    store_chunk<N>(x, base, end, full, v);
  }
  finish_generator(state, offset, counters_for((uint64_t)batch));
}

template <class XT, class GT>
const char* mala_propose_launch(XT* x_prop, const XT* x, const GT* g, int64_t* state, int64_t n,
                                const SgldParams<compute_t<XT>>& p, const Layout& L, int device,
                                void* stream) {
  if (n <= 0) return nullptr;
  DeviceGuard guard(device);
  if (guard.err != cudaSuccess) return cudaGetErrorString(guard.err);
  const bool aligned = aligned16(x_prop) && aligned16(x) && aligned16(g);
  constexpr int N = kElemsPerThread<XT>;
  const int64_t items = (n + N - 1) / N;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (L.channels_last) {
    constexpr auto k = mala_propose_kernel<XT, GT, true>;
    k<<<grid_for<k>(items, device), kThreads, 0, s>>>(x_prop, x, g, state, n, p, L, aligned);
  } else {
    constexpr auto k = mala_propose_kernel<XT, GT, false>;
    k<<<grid_for<k>(items, device), kThreads, 0, s>>>(x_prop, x, g, state, n, p, L, aligned);
  }
  return launch_status();
}

template <class XT, class ET>
const char* mala_accept_launch(XT* x, const XT* x_prop, const ET* e, const ET* e_prop,
                               const ET* lq_fwd, const ET* lq_rev, bool* accepted, int64_t* state,
                               int64_t n, int64_t batch, int device, void* stream) {
  if (batch <= 0) return nullptr;
  DeviceGuard guard(device);
  if (guard.err != cudaSuccess) return cudaGetErrorString(guard.err);
  constexpr int N = kElemsPerThread<XT>;
  const int64_t D = n / batch, tile = (int64_t)kThreads * N;
  const int64_t tiles = D > 0 ? (D + tile - 1) / tile : 1;   // a sample of no elements still decides
  const bool aligned = aligned16(x) && aligned16(x_prop) && D % N == 0;
  constexpr auto k = mala_accept_kernel<XT, ET>;
  k<<<grid_for<k>(batch * tiles * kThreads, device), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      x, x_prop, e, e_prop, lq_fwd, lq_rev, accepted, state, batch, D, tiles, aligned);
  return launch_status();
}

#define EBJDAT_INSTANTIATE_MALA(X, G)                                                     \
  template const char* mala_propose_launch<X, G>(X*, const X*, const G*, int64_t*, int64_t, \
                                                 const SgldParams<compute_t<X>>&,           \
                                                 const Layout&, int, void*);                \
  template const char* mala_accept_launch<X, G>(X*, const X*, const G*, const G*, const G*, \
                                                const G*, bool*, int64_t*, int64_t, int64_t, \
                                                int, void*);
EBJDAT_FOR_XG(EBJDAT_INSTANTIATE_MALA)

}  // namespace ebjdat
