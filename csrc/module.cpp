// ebjdat._C: the fused ops' kernels (kernels/*.cu) and their host twins; each op family's
// entries come from its csrc/<family>.cpp, which registers them (EBJDAT_REGISTER, fastcall.h).
//
// Independent of torch's C++ ABI: tensors arrive as integer data pointers with element
// counts and dtype codes (0=float32, 1=float16, 2=bfloat16, 3=float64), streams as the
// raw cudaStream_t of the caller. `<op>` launches on CUDA memory; `<op>_host` runs the same
// element functions and Philox stream on CPU memory (the test path without a GPU). Both are
// CPython fastcall functions (fastcall.h): a pybind11 binding costs 0.3 us more per call.
// cudart is linked statically, so importing needs no GPU, driver or CUDA install.
#include <string>
#include <vector>

#include "common.h"
#include "fastcall.h"
#include "cpu_noise.h"
#include "cpu_threads.h"
#include "philox.cuh"

#ifndef EBJDAT_DEVICE_CODE
#define EBJDAT_DEVICE_CODE 1
#endif

PYBIND11_MODULE(_C, m) {
  namespace py = pybind11;
  m.doc() = "ebjdat CUDA kernels of the fused ops (one csrc/<family>.cpp each) and their host twins";
  for (const ebjdat::Registrar add : ebjdat::registrars()) add(m);   // every csrc/<family>.cpp's entries
  m.def(
      "philox4x32_host",
      [](py::int_ seed, py::int_ counter) {
        // any Python int, taken modulo 2**64 (so negative int64 seeds work too)
        const uint64_t s = PyLong_AsUnsignedLongLongMask(seed.ptr());
        const uint64_t c = PyLong_AsUnsignedLongLongMask(counter.ptr());
        if (PyErr_Occurred()) throw py::error_already_set();
        const ebjdat::Philox4 r = ebjdat::philox4x32(s, c);
        return py::make_tuple(r.r0, r.r1, r.r2, r.r3);
      },
      "Philox4x32-10 words (r0, r1, r2, r3) of the 64-bit counter under the 64-bit seed.",
      py::arg("seed"), py::arg("counter"));
  m.def(
      "generator_count_host",
      [](uint64_t done, uint64_t offset, uint32_t grid) {
        bool advance = false;
        const uint64_t after = ebjdat::count_done(done, offset, grid, advance);
        return py::make_tuple(after, advance);
      },
      "One finished block's count on the generator's done-word, as the kernels' CAS makes it: "
      "(the word after it, whether this block advances the offset); offset: what the block read.",
      py::arg("done"), py::arg("offset"), py::arg("grid"));
  m.def(
      "cpu_simd_level", [] { return std::string(ebjdat::cpu_simd_level()); },
      "The vector instructions the host loops run with on this CPU: avx512, avx2 or baseline.");
  m.def(
      "cpu_normals_host",
      [](uint64_t seed, uint64_t offset, uint64_t q0, int64_t nq) {
        if (nq < 0 || nq > (int64_t(1) << 24)) throw py::value_error("nq must be in [0, 2**24]");
        std::vector<float> z((size_t)(4 * nq));
        ebjdat::cpu_normals(seed, offset, q0, nq, z.data());
        return py::bytes(reinterpret_cast<const char*>(z.data()), z.size() * sizeof(float));
      },
      "The normals of counters offset + q0 .. + nq - 1 (4 per counter) as fp32 bytes: the "
      "cpu backend's vectorised Box-Muller, for tests.",
      py::arg("seed"), py::arg("offset"), py::arg("q0"), py::arg("nq"));
  m.def(
      "cpu_pool_workers", [] { return ebjdat::pool_workers(); },
      "Worker threads the host loops' pool has started in this process (0: every loop so far ran "
      "on the calling thread).");
  m.def(
      "has_device_code", [] { return EBJDAT_DEVICE_CODE != 0; },
      "True when the module carries the CUDA kernels (not only the host twins).");
}
