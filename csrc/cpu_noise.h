// The cpu backend's Philox normals: the stream of kernels/philox.cuh (bit-identical words;
// normals within ebjdat.ops.philox.NOISE_ATOL of the specification) for a run of
// consecutive counters at once, so that the compiler vectorises across counters.
#pragma once

#include <cstdint>

#include "common.cuh"

namespace ebjdat {

// z[4k + j] = normal j of counter offset + q0 + k (logical element 4 (q0 + k) + j of a call
// at `offset`), for k < nq. Compiled for baseline x86-64, AVX2+FMA and AVX-512; the copy
// is chosen when the module loads, by the CPU it runs on (cpu_noise.cpp).
void cpu_normals(uint64_t seed, uint64_t offset, uint64_t q0, int64_t nq, float* z);

// w[4k + j] = word j of counter offset + q0 + k (the word of logical element 4 (q0 + k) + j,
// as word_of), for k < nq: the same copies as cpu_normals.
void cpu_words(uint64_t seed, uint64_t offset, uint64_t q0, int64_t nq, uint32_t* w);

// The instruction set cpu_normals runs with here: "avx512", "avx2" or "baseline".
const char* cpu_simd_level();

// 2: AVX-512, 1: AVX2+FMA, 0: baseline, as cpu_simd_level (read once).
int cpu_simd_index();

}  // namespace ebjdat
