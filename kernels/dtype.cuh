// Storage types and bit-exact conversions, identical on host and device.
//
// fp16 and bf16 live in uint16_t tag types (no cuda_fp16.h, so g++ can compile the host
// path). float -> fp16/bf16 rounds to nearest even, handles subnormals, overflow to inf,
// and NaN exactly as torch's .to(dtype) does on the CPU (c10::Half / c10::BFloat16):
// NaN becomes the canonical 0x7E00 (sign kept) for fp16 and 0x7FC0 for bf16. Only plain
// integer operations are used, so host and device give the same bits.
#pragma once

#include "common.cuh"

namespace ebjdat {

struct f16 { uint16_t bits; };   // IEEE binary16
struct bf16 { uint16_t bits; };  // bfloat16: the upper half of a float

EBJDAT_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  return u;
#endif
}

EBJDAT_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
#endif
}

EBJDAT_HD float half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1Fu;
  uint32_t m = h & 0x3FFu;
  if (e == 0x1F) return bits_float(sign | 0x7F800000u | (m << 13));       // inf, NaN
  if (e != 0) return bits_float(sign | ((e + 112u) << 23) | (m << 13));  // normal
  if (m == 0) return bits_float(sign);                                    // +-0
  uint32_t fe = 113;  // subnormal m * 2^-24: normalise the mantissa
  while (!(m & 0x400u)) { m <<= 1; --fe; }
  return bits_float(sign | (fe << 23) | ((m & 0x3FFu) << 13));
}

EBJDAT_HD uint16_t float_to_half(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return sign | 0x7E00u;   // NaN
  if (ax >= 0x47800000u) return sign | 0x7C00u;  // >= 65536 (and inf): inf
  if (ax >= 0x38800000u) {                       // >= 2^-14: normal (may round up to inf)
    uint32_t h = (ax - 0x38000000u) >> 13;       // rebias exponent 127 -> 15
    const uint32_t rem = ax & 0x1FFFu;
    h += (rem > 0x1000u) || (rem == 0x1000u && (h & 1u));
    return sign | (uint16_t)h;
  }
  if (ax <= 0x33000000u) return sign;            // <= 2^-25: rounds to zero (tie to even)
  const uint32_t mant = (ax & 0x7FFFFFu) | 0x800000u;
  const uint32_t shift = 126u - (ax >> 23);      // value = mant >> shift units of 2^-24
  uint32_t h = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
  h += (rem > halfway) || (rem == halfway && (h & 1u));
  return sign | (uint16_t)h;
}

EBJDAT_HD float bf16_to_float(uint16_t b) { return bits_float((uint32_t)b << 16); }

EBJDAT_HD uint16_t float_to_bf16(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0u;  // NaN
  return (uint16_t)((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

// Dtype<S>: the compute type C of storage type S (double for fp64, float otherwise),
// load (exact widening) and store (one rounding to S).
template <class S> struct Dtype;
template <> struct Dtype<float> {
  using C = float;
  static EBJDAT_HD float load(float v) { return v; }
  static EBJDAT_HD float store(float v) { return v; }
};
template <> struct Dtype<double> {
  using C = double;
  static EBJDAT_HD double load(double v) { return v; }
  static EBJDAT_HD double store(double v) { return v; }
};
template <> struct Dtype<f16> {
  using C = float;
  static EBJDAT_HD float load(f16 v) { return half_to_float(v.bits); }
  static EBJDAT_HD f16 store(float v) { return f16{float_to_half(v)}; }
};
template <> struct Dtype<bf16> {
  using C = float;
  static EBJDAT_HD float load(bf16 v) { return bf16_to_float(v.bits); }
  static EBJDAT_HD bf16 store(float v) { return bf16{float_to_bf16(v)}; }
};

template <class S> using compute_t = typename Dtype<S>::C;

// A value of any storage type in compute type C: grad.to(C) in the specification
// (fp64 -> float rounds to nearest even; everything else widens exactly).
template <class C, class S>
EBJDAT_HD C load_as(S v) { return static_cast<C>(Dtype<S>::load(v)); }

template <class S>
EBJDAT_HD S store_as(compute_t<S> v) { return Dtype<S>::store(v); }

}  // namespace ebjdat
