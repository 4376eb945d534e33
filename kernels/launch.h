// Shared by the op families' launchers. Each kernels/<family>.cuh declares its host-callable
// launchers (defined in kernels/<family>.cu, explicitly instantiated for every storage type
// with the macros below); csrc/<family>.cpp includes that header, plain C++ without CUDA
// headers. Each launcher makes `device` current, launches on `stream` (the caller's
// cudaStream_t), allocates nothing, never synchronises, and returns nullptr on success or
// CUDA's error string.
#pragma once

#include "common.cuh"
#include "dtype.cuh"

// Every storage type of x, and every (x, grad) pair, for explicit instantiation.
#define EBJDAT_FOR_X(M) M(float) M(double) M(::ebjdat::f16) M(::ebjdat::bf16)
#define EBJDAT_FOR_G_(M, X) M(X, float) M(X, double) M(X, ::ebjdat::f16) M(X, ::ebjdat::bf16)
#define EBJDAT_FOR_XG(M)                                                       \
  EBJDAT_FOR_G_(M, float) EBJDAT_FOR_G_(M, double) EBJDAT_FOR_G_(M, ::ebjdat::f16) \
  EBJDAT_FOR_G_(M, ::ebjdat::bf16)
