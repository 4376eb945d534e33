// The cpu backend's threads: a small pool of its own, so that the extension links no
// OpenMP runtime beside torch's (two runtimes spin against each other on few cores).
// The caller passes torch's thread count (ebjdat/ops/cuda.py: host_threads), so the host
// loops use as many threads as torch's own ops.
#pragma once

#include <cstdint>
#include <functional>

namespace ebjdat {

// Elements below which a host loop stays on the calling thread: waking a worker costs a
// few microseconds, the loop over 2**16 fp32 elements about 30.
constexpr int64_t kThreadMinElements = int64_t(1) << 16;

// Calls f(begin, end) on contiguous ranges that cover [0, units) once, on the calling
// thread and up to threads - 1 pool workers, and returns when every range is done. Ranges
// are whole units, so a result never depends on the thread count when f's units are
// independent (the Philox counters of a unit are fixed by its index). threads <= 1, or a
// single unit, runs f(0, units) inline.
void parallel_for(int64_t units, int threads, const std::function<void(int64_t, int64_t)>& f);

// Workers the pool has started in this process (0 until a loop first runs threaded).
int pool_workers();

// The threads a loop over n elements in `units` units uses: 1 below kThreadMinElements,
// else min(threads, units).
inline int loop_threads(int64_t n, int64_t units, int threads) {
  if (n < kThreadMinElements || threads <= 1 || units <= 1) return 1;
  return (int)(units < threads ? units : threads);
}

}  // namespace ebjdat
