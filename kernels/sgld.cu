// sgld_step kernel: each thread updates chunks of kElemsPerThread<XT> consecutive
// elements (16-byte accesses when aligned), grid-striding over the tensor: whole chunks in
// a loop free of bound checks, then the tail. The element
// math is sgld_step_element (kernels/sgld.cuh), the same function the host loop runs.
// NOISE is a template flag so that the noiseless kernel contains no Philox and no
// generator traffic at all; CL (channels_last) one too, so that a kernel holds one noise
// path: logical order draws one Philox call per 4 elements, channels_last one per element.
#include "device.cuh"
#include "launch.h"
#include "sgld.cuh"

namespace ebjdat {

// One chunk of N elements from base. FULL: the chunk is whole and every pointer 16-byte
// aligned, so the code has no bound checks at all (the hot loop's body).
template <bool FULL, bool NOISE, class XT, class GT, int N>
__device__ __forceinline__ void sgld_chunk(XT* __restrict__ x, const GT* __restrict__ g, int64_t base,
                                           int64_t n, uint64_t seed, uint64_t offset, const Layout& L,
                                           const SgldParams<compute_t<XT>>& p) {
  XT xs[N];
  GT gs[N];
  load_chunk<N>(x, base, n, FULL, xs);
  load_chunk<N>(g, base, n, FULL, gs);
  float zs[N] = {};
  if (NOISE) noise_chunk<N>(seed, offset, L, base, n, zs);
#pragma unroll
  for (int j = 0; j < N; ++j) {
    if (!FULL && base + j >= n) break;
    xs[j] = sgld_step_element<XT, GT>(xs[j], gs[j], zs[j], NOISE, p);
  }
  store_chunk<N>(x, base, n, FULL, xs);
}

template <class XT, class GT, bool NOISE, bool CL>
__global__ void __launch_bounds__(kThreads)
sgld_step_kernel(XT* __restrict__ x, const GT* __restrict__ g, int64_t* state, int64_t n,
                 SgldParams<compute_t<XT>> p, Layout L, bool aligned) {
  L.channels_last = CL;   // a template flag: each kernel holds one noise path
  constexpr int N = kElemsPerThread<XT>;
  uint64_t seed = 0, offset = 0;
  if (NOISE) read_generator(state, seed, offset);
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  // whole aligned chunks first, in a loop without bound checks; then, continuing the same
  // grid stride, the last partial chunk (or every chunk of unaligned memory)
  for (const int64_t whole = aligned ? n / N : 0; k < whole; k += stride)
    sgld_chunk<true, NOISE, XT, GT, N>(x, g, k * N, n, seed, offset, L, p);
  for (const int64_t chunks = (n + N - 1) / N; k < chunks; k += stride)
    sgld_chunk<false, NOISE, XT, GT, N>(x, g, k * N, n, seed, offset, L, p);
  if (NOISE) finish_generator(state, offset, counters_for((uint64_t)n));
}

template <class XT, class GT>
const char* sgld_step_launch(XT* x, const GT* g, int64_t* state, int64_t n,
                             const SgldParams<compute_t<XT>>& p, bool noise, const Layout& L,
                             int device, void* stream) {
  if (n <= 0) return nullptr;
  DeviceGuard guard(device);
  if (guard.err != cudaSuccess) return cudaGetErrorString(guard.err);
  const bool aligned = aligned16(x) && aligned16(g);
  constexpr int N = kElemsPerThread<XT>;
  const int64_t items = (n + N - 1) / N;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (noise && L.channels_last) {
    constexpr auto k = sgld_step_kernel<XT, GT, true, true>;
    k<<<grid_for<k>(items, device), kThreads, 0, s>>>(x, g, state, n, p, L, aligned);
  } else if (noise) {
    constexpr auto k = sgld_step_kernel<XT, GT, true, false>;
    k<<<grid_for<k>(items, device), kThreads, 0, s>>>(x, g, state, n, p, L, aligned);
  } else {
    constexpr auto k = sgld_step_kernel<XT, GT, false, false>;
    k<<<grid_for<k>(items, device), kThreads, 0, s>>>(x, g, state, n, p, L, aligned);
  }
  return launch_status();
}

#define EBJDAT_INSTANTIATE_SGLD(X, G)                                                  \
  template const char* sgld_step_launch<X, G>(X*, const G*, int64_t*, int64_t,         \
                                              const SgldParams<compute_t<X>>&, bool,   \
                                              const Layout&, int, void*);
EBJDAT_FOR_XG(EBJDAT_INSTANTIATE_SGLD)

}  // namespace ebjdat
