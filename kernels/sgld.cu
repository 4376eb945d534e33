// sgld_step kernel: each thread updates chunks of kElemsPerThread<XT> consecutive
// elements (16-byte accesses when aligned), grid-striding over the tensor. The element
// math is sgld_step_element (kernels/sgld.cuh), the same function the host loop runs.
// NOISE is a template flag so that the noiseless kernel contains no Philox and no
// generator traffic at all; CL (channels_last) one too, so that a kernel holds one noise
// path: logical order draws one Philox call per 4 elements, channels_last one per element.
#include "device.cuh"
#include "launch.h"

namespace ebjdat {

template <class XT, class GT, bool NOISE, bool CL>
__global__ void __launch_bounds__(kThreads)
sgld_step_kernel(XT* __restrict__ x, const GT* __restrict__ g, int64_t* state, int64_t n,
                 SgldParams<compute_t<XT>> p, Layout L, bool aligned) {
  L.channels_last = CL;   // a template flag: each kernel holds one noise path
  constexpr int N = kElemsPerThread<XT>;
  uint64_t seed = 0, offset = 0;
  if (NOISE) read_generator(state, seed, offset);
  const int64_t chunks = (n + N - 1) / N;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < chunks; k += stride) {
    const int64_t base = k * N;
    const bool full = aligned && base + N <= n;
    XT xs[N];
    GT gs[N];
    load_chunk<N>(x, base, n, full, xs);
    load_chunk<N>(g, base, n, full, gs);
    float zs[N] = {};
    if (NOISE) noise_chunk<N>(seed, offset, L, base, n, zs);
#pragma unroll
    for (int j = 0; j < N; ++j) {
      if (!full && base + j >= n) break;
      xs[j] = sgld_step_element<XT, GT>(xs[j], gs[j], zs[j], NOISE, p);
    }
    store_chunk<N>(x, base, n, full, xs);
  }
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
