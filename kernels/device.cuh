// Device-side plumbing for the .cu files: chunked (16-byte vectorised) loads and stores,
// grid sizing from each kernel's occupancy, the current-device guard, and launch error reporting.
#pragma once

#include <cuda_runtime.h>

#include <atomic>

#include "common.cuh"
#include "reduce.cuh"

namespace ebjdat {

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

// SMs of `device` (132 if it cannot be asked), read once per device.
inline int sm_count(int device) {
  static std::atomic<int> cache[64] = {};
  if (device < 0 || device >= 64) return 132;
  int sms = cache[device].load(std::memory_order_relaxed);
  if (!sms) {
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms <= 0)
      sms = 132;
    cache[device].store(sms, std::memory_order_relaxed);
  }
  return sms;
}

// Blocks of `threads` for `items` work items (one per thread): enough to cover them, at
// most one full wave: as many blocks per SM as Kernel's registers and shared memory let
// be resident (its compiled occupancy, asked once per device), times the SMs. A fixed
// cap of 8 per SM would make kernels that fit 4-6 run in 1.3-2 waves. Kernels
// grid-stride over the rest; the cap also keeps the generator's per-block atomics few.
// `threads` is a multiple of 32 up to kThreads; occupancy is cached per block size.
template <auto Kernel>
inline unsigned grid_for(int64_t items, int device, int threads = kThreads) {
  static std::atomic<int> per_sm[64][kThreads / 32] = {};
  int fit = 8;
  if (device >= 0 && device < 64) {
    std::atomic<int>& cached = per_sm[device][threads / 32 - 1];
    fit = cached.load(std::memory_order_relaxed);
    if (!fit) {
      if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fit, Kernel, threads, 0) != cudaSuccess || fit <= 0) {
        cudaGetLastError();  // clear it: the launch's own status is what the caller reads
        fit = 8;
      }
      cached.store(fit, std::memory_order_relaxed);
    }
  }
  int64_t blocks = (items + threads - 1) / threads;
  const int64_t cap = (int64_t)sm_count(device) * fit;
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
