// Shared by the host sources of ebjdat._C: dtype codes and dispatch, argument checks that
// raise Python ValueError, and the conversion of a launch error into RuntimeError.
//
// Tensors cross the boundary as integer data pointers, element counts and dtype codes
// (no torch headers, no torch ABI): ebjdat/ops/cuda.py passes them.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

#include "launch.h"

namespace ebjdat {
namespace py = pybind11;

// dtype codes, as ebjdat/ops/cuda.py sends them
enum DtypeCode : int { kF32 = 0, kF16 = 1, kBF16 = 2, kF64 = 3 };

inline void check_dtype(const char* name, int code) {
  if (code < kF32 || code > kF64)
    throw py::value_error(std::string(name) + ": unknown dtype code " + std::to_string(code) +
                          " (expected 0=float32, 1=float16, 2=bfloat16, 3=float64)");
}

// Calls f(S{}) with S the storage type of `code` (checked beforehand).
template <class F>
void dispatch_dtype(int code, F&& f) {
  switch (code) {
    case kF32: f(float{}); break;
    case kF16: f(f16{}); break;
    case kBF16: f(bf16{}); break;
    case kF64: f(double{}); break;
    default: throw py::value_error("unknown dtype code " + std::to_string(code));
  }
}

inline void check_count(int64_t n) {
  if (n < 0) throw py::value_error("n (the element count) must be >= 0, got " + std::to_string(n));
}

inline void check_ptr(const char* name, uintptr_t p, int64_t n) {
  if (n > 0 && p == 0) throw py::value_error(std::string(name) + ": null data pointer");
}

// A tensor's element count against what the op reads or writes through its pointer: the
// entries are reachable from Python with any pointers, so a count that differs is refused
// before any memory is touched (`of` says whose count it must equal).
inline void check_elements(const char* name, int64_t count, int64_t want, const char* of) {
  if (count != want)
    throw py::value_error(std::string(name) + " has " + std::to_string(count) + " elements, expected " +
                          std::to_string(want) + " (" + of + ")");
}

// A generator state the op reads and advances: [seed, offset, done], 3 int64 elements.
inline void check_state(uintptr_t state, int64_t state_count) {
  if (state == 0) throw py::value_error("state: null data pointer (the op draws noise: pass a generator state)");
  check_elements("state", state_count, 3, "a PhiloxGenerator's [seed, offset, done]");
}

// The host entries read the offset (CPU memory) and refuse a call that would carry it past
// 2**63 - 1, before anything is written.
inline void check_offset_host(uintptr_t state, uint64_t counters) {
  const int64_t offset = reinterpret_cast<const int64_t*>(state)[1];
  if (offset < 0 || (uint64_t)offset > (uint64_t)std::numeric_limits<int64_t>::max() - counters)
    throw py::value_error("the generator's Philox offset " + std::to_string(offset) + " would pass 2**63 - 1 with "
                          "this call's " + std::to_string(counters) + " counters; reseed the generator "
                          "(manual_seed) before drawing more");
}

// The host loops' thread count (torch.get_num_threads() of the caller).
inline void check_threads(int threads) {
  if (threads < 1 || threads > 4096)
    throw py::value_error("threads must be in [1, 4096], got " + std::to_string(threads));
}

// (C, H, W) = (0, 0, 0): contiguous; all > 0: channels_last 4-D with n = N*C*H*W.
inline Layout make_layout(int64_t C, int64_t H, int64_t W, int64_t n) {
  if (C == 0 && H == 0 && W == 0) return Layout{false, 1, 1, 1};
  if (C <= 0 || H <= 0 || W <= 0)
    throw py::value_error("layout (C, H, W) must be all 0 (contiguous) or all > 0 (channels_last)");
  if (n % (C * H * W) != 0)
    throw py::value_error("channels_last layout: n is not a multiple of C*H*W");
  return Layout{true, C, H, W};
}

// The batch of a per-sample (l2) op: n must split into `batch` samples.
inline void check_batch(int64_t batch, int64_t n) {
  if (n > 0 && (batch <= 0 || n % batch != 0))
    throw py::value_error("batch (x.shape[0]) must be > 0 and divide n, got batch=" +
                          std::to_string(batch) + ", n=" + std::to_string(n));
}

// EBJDAT_DEVICE_CODE (set by CMakeLists.txt): 1 when kernels/*.cu are compiled in, 0 for the
// C++-only build (no nvcc), whose CUDA entries then report that instead of launching; the
// host entries are the same in both builds.
#ifndef EBJDAT_DEVICE_CODE
#define EBJDAT_DEVICE_CODE 1
#endif
#if EBJDAT_DEVICE_CODE
#define EBJDAT_LAUNCH(...) (__VA_ARGS__)
#else
#define EBJDAT_LAUNCH(...) ("ebjdat._C was built without device code (no nvcc)")
#endif

inline void raise_if_error(const char* op, const char* err) {
  if (err) throw std::runtime_error(std::string("ebjdat._C.") + op + ": CUDA error: " + err);
}

// The host loops release the GIL only when the loop is long enough for it to pay: a
// release and re-acquire costs about 0.07 us, more than a loop over 16 elements.
class HostNoGil {
 public:
  explicit HostNoGil(int64_t n) {
    if (n >= (int64_t(1) << 14)) release_.emplace();
  }

 private:
  std::optional<py::gil_scoped_release> release_;
};

template <class T>
T* as_ptr(uintptr_t p) { return reinterpret_cast<T*>(p); }

// Python float -> compute type C, rounded to nearest even as torch.tensor(v, dtype) does.
template <class C>
C scalar(double v) { return static_cast<C>(v); }

}  // namespace ebjdat
