// Device-side plumbing for the .cu files: chunked (16-byte vectorised) loads and stores,
// grid sizing, the current-device guard, and launch error reporting.
#pragma once

#include <cuda_runtime.h>

#include "common.cuh"
#include "reduce.cuh"

namespace ebjdat {

// Elements per thread: 8 for 2-byte x (one 16-byte access), 4 otherwise.
template <class XT>
constexpr int kElemsPerThread = sizeof(XT) == 2 ? 8 : 4;

// Chunk loads/stores of N consecutive elements starting at p[base]. `full`: the whole
// chunk is in range and every tensor pointer is 16-byte aligned, so the chunk (N*sizeof(T)
// bytes at an offset that is a multiple of that size) can move as 16- or 8-byte words.
// Otherwise element by element with a bound check (the tail, or unaligned views).
template <int N, class T>
__device__ __forceinline__ void load_chunk(const T* p, int64_t base, int64_t n, bool full,
                                           T (&out)[N]) {
  constexpr int kBytes = N * (int)sizeof(T);
  static_assert(kBytes % 16 == 0 || kBytes == 8, "chunks are 8 bytes or multiples of 16");
  if (full) {
    if constexpr (kBytes % 16 == 0) {
      uint4 w[kBytes / 16];
      const uint4* q = reinterpret_cast<const uint4*>(p + base);
#pragma unroll
      for (int i = 0; i < kBytes / 16; ++i) w[i] = q[i];
      memcpy(out, w, kBytes);
    } else {
      const uint2 w = *reinterpret_cast<const uint2*>(p + base);
      memcpy(out, &w, 8);
    }
    return;
  }
#pragma unroll
  for (int j = 0; j < N; ++j)
    if (base + j < n) out[j] = p[base + j];
}

template <int N, class T>
__device__ __forceinline__ void store_chunk(T* p, int64_t base, int64_t n, bool full,
                                            const T (&in)[N]) {
  constexpr int kBytes = N * (int)sizeof(T);
  if (full) {
    if constexpr (kBytes % 16 == 0) {
      uint4 w[kBytes / 16];
      memcpy(w, in, kBytes);
      uint4* q = reinterpret_cast<uint4*>(p + base);
#pragma unroll
      for (int i = 0; i < kBytes / 16; ++i) q[i] = w[i];
    } else {
      uint2 w;
      memcpy(&w, in, 8);
      *reinterpret_cast<uint2*>(p + base) = w;
    }
    return;
  }
#pragma unroll
  for (int j = 0; j < N; ++j)
    if (base + j < n) p[base + j] = in[j];
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Blocks for `items` work items (one per thread): enough to cover them, at most 8 blocks of
// 256 threads per SM (a full H100 wave); kernels grid-stride over the rest. Capping the
// grid also keeps the generator's per-block atomic count small.
inline unsigned grid_for(int64_t items, int device) {
  static int sm_count[64] = {0};
  int sms = 0;
  if (device >= 0 && device < 64) {
    if (!sm_count[device])
      cudaDeviceGetAttribute(&sm_count[device], cudaDevAttrMultiProcessorCount, device);
    sms = sm_count[device];
  }
  if (sms <= 0) sms = 132;
  int64_t blocks = (items + kThreads - 1) / kThreads;
  const int64_t cap = (int64_t)sms * 8;
  if (blocks > cap) blocks = cap;
  return blocks < 1 ? 1u : (unsigned)blocks;
}

// Makes `device` current for a launch and restores the caller's device afterwards
// (a launch on another device's stream would fail).
struct DeviceGuard {
  int prev = -1;
  cudaError_t err = cudaSuccess;
  explicit DeviceGuard(int device) {
    int cur = -1;
    err = cudaGetDevice(&cur);
    if (err == cudaSuccess && cur != device) {
      err = cudaSetDevice(device);
      if (err == cudaSuccess) prev = cur;
    }
  }
  ~DeviceGuard() {
    if (prev >= 0) cudaSetDevice(prev);
  }
};

// nullptr when the last launch succeeded, else CUDA's message for the error.
inline const char* launch_status() {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

}  // namespace ebjdat
