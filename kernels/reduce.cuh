// Per-sample sums for the l2 ops, in one fixed order on host and device.
//
// A chunk of a sample is summed by the T threads of a block (a multiple of 32, at most
// 256; L2Plan in pgd.cuh), each accumulating its vectors in order; the T partial
// sums are combined by a warp-shuffle tree (v[l] += v[l + off], off = 16, 8, 4, 2, 1)
// within each warp, then the same tree over the per-warp sums (zero-padded to 32).
// block_sum runs that on the device; block_sum_host replays it on the CPU, so the host
// path gives the device's l2 results bit for bit.
#pragma once

#include "common.cuh"

namespace ebjdat {

constexpr int kThreads = 256;  // block size of every kernel

// Elements per thread and pass: 8 for 2-byte x (one 16-byte access), 4 otherwise.
template <class XT>
constexpr int kElemsPerThread = sizeof(XT) == 2 ? 8 : 4;

template <class A>
inline A tree32_host(A* v) {
  for (int off = 16; off; off >>= 1)
    for (int l = 0; l < off; ++l) v[l] = v[l] + v[l + off];
  return v[0];
}

// partial[0..T): the threads' partial sums (overwritten). T is a multiple of 32.
template <class A>
inline A block_sum_host(A* partial, int T) {
  A warps[32];
  for (int w = 0; w < 32; ++w) warps[w] = A(0);
  for (int w = 0; w < T / 32; ++w) warps[w] = tree32_host(partial + 32 * w);
  return tree32_host(warps);
}

#if defined(__CUDACC__)
template <class A>
__device__ __forceinline__ A warp_tree(A v) {
#pragma unroll
  for (int off = 16; off; off >>= 1) v = v + __shfl_down_sync(0xFFFFFFFFu, v, off);
  return v;  // meaningful in lane 0
}

// Sum of v over the block (blockDim.x a multiple of 32), returned to every thread.
// Safe to call repeatedly: the leading barrier waits for readers of the last result.
template <class A>
__device__ __forceinline__ A block_sum(A v) {
  __shared__ A part[32];
  __shared__ A total;
  const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  v = warp_tree(v);
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    A w = lane < (blockDim.x >> 5) ? part[lane] : A(0);
    w = warp_tree(w);
    if (lane == 0) total = w;
  }
  __syncthreads();
  return total;
}
#endif

}  // namespace ebjdat
