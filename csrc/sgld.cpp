// sgld_step: argument checks, dtype dispatch, the CUDA launch (sgld_step) and the host
// loop over the same element math (sgld_step_host) for CPU memory.
// Noise is drawn iff noise_std > 0 (as in ebjdat/ops/sgld/spec.py); the generator state
// [seed, offset, done] is then required and its offset advances by ceil(n / 4). Every
// pointer comes with its tensor's element count, checked before anything is touched.
#include "common.h"
#include "cpu_loops.h"
#include "sgld_host.h"
#include "fastcall.h"
#include "sgld.cuh"

namespace ebjdat {
namespace {

struct SgldArgs {
  uintptr_t x, grad, state;
  int64_t n;
  int x_dtype, grad_dtype;
  double step_size, noise_std, grad_clip, lo, hi;
  Layout layout;
  bool noise;
};

SgldArgs check(uintptr_t x, uintptr_t grad, uintptr_t state, int64_t n, int64_t grad_count,
               int64_t state_count, int x_dtype, int grad_dtype, double step_size, double noise_std,
               double grad_clip, double lo, double hi, int64_t C, int64_t H, int64_t W) {
  check_count(n);
  check_elements("grad", grad_count, n, "those of x");
  check_dtype("x", x_dtype);
  check_dtype("grad", grad_dtype);
  check_ptr("x", x, n);
  check_ptr("grad", grad, n);
  const bool noise = noise_std > 0;
  if (noise) check_state(state, state_count);
  return SgldArgs{x, grad, state, n, x_dtype, grad_dtype, step_size, noise_std, grad_clip,
                  lo, hi, make_layout(C, H, W, n), noise};
}

template <class C>
SgldParams<C> params(const SgldArgs& a) {
  return SgldParams<C>{scalar<C>(a.step_size), scalar<C>(a.noise_std), scalar<C>(a.grad_clip),
                       scalar<C>(a.lo), scalar<C>(a.hi)};
}

// The cpu backend's loop (and the CUDA kernel's CPU twin): same element function, same
// counters, blocks of elements over `threads` threads (cpu_loops.h).
template <class XT, class GT>
void sgld_step_loop(XT* x, const GT* g, int64_t* state, int64_t n,
                    const SgldParams<compute_t<XT>>& p, bool noise, const Layout& L, int threads) {
  if (!noise) {
    host_for(n, threads, [=](int64_t i) { x[i] = sgld_step_element<XT, GT>(x[i], g[i], 0.0f, false, p); });
    return;
  }
  sgld_noisy_loop<XT, GT>(x, x, g, state, n, p, L, threads);
}

void sgld_step_host(uintptr_t x, uintptr_t grad, uintptr_t state, int64_t n, int64_t grad_count,
                    int64_t state_count, int x_dtype, int grad_dtype, double step_size,
                    double noise_std, double grad_clip, double lo, double hi, int64_t C, int64_t H,
                    int64_t W, int threads) {
  const SgldArgs a = check(x, grad, state, n, grad_count, state_count, x_dtype, grad_dtype, step_size,
                           noise_std, grad_clip, lo, hi, C, H, W);
  check_threads(threads);
  if (a.noise) check_offset_host(state, counters_for((uint64_t)n));
  HostNoGil nogil(a.n);
  dispatch_dtype(a.x_dtype, [&](auto xt) {
    using XT = decltype(xt);
    dispatch_dtype(a.grad_dtype, [&](auto gt) {
      using GT = decltype(gt);
      sgld_step_loop<XT, GT>(as_ptr<XT>(a.x), as_ptr<const GT>(a.grad), as_ptr<int64_t>(a.state),
                             a.n, params<compute_t<XT>>(a), a.noise, a.layout, threads);
    });
  });
}

void sgld_step(uintptr_t x, uintptr_t grad, uintptr_t state, int64_t n, int64_t grad_count,
               int64_t state_count, int x_dtype, int grad_dtype, double step_size, double noise_std,
               double grad_clip, double lo, double hi, int64_t C, int64_t H, int64_t W, int device,
               uintptr_t stream) {
  const SgldArgs a = check(x, grad, state, n, grad_count, state_count, x_dtype, grad_dtype, step_size,
                           noise_std, grad_clip, lo, hi, C, H, W);
  const char* err = nullptr;
  {
    py::gil_scoped_release nogil;
    dispatch_dtype(a.x_dtype, [&](auto xt) {
      using XT = decltype(xt);
      dispatch_dtype(a.grad_dtype, [&](auto gt) {
        using GT = decltype(gt);
        err = EBJDAT_LAUNCH(sgld_step_launch<XT, GT>(as_ptr<XT>(a.x), as_ptr<const GT>(a.grad),
                                                     as_ptr<int64_t>(a.state), a.n, params<compute_t<XT>>(a),
                                                     a.noise, a.layout, device, reinterpret_cast<void*>(stream)));
      });
    });
  }
  raise_if_error("sgld_step", err);
}

constexpr char kSgldStep[] = "sgld_step";
constexpr char kSgldStepHost[] = "sgld_step_host";

PyMethodDef sgld_defs[] = {
    EBJDAT_FASTCALL(sgld_step, kSgldStep,
                    "sgld_step(x, grad, state, n, grad_count, state_count, x_dtype, grad_dtype, step_size, "
                    "noise_std, grad_clip, lo, hi, C, H, W, device, stream): x <- clamp(x + step_size*clamp(grad, -grad_clip, "
                    "grad_clip) [+ noise_std*z], lo, hi) on CUDA memory, launched on `stream` (a "
                    "cudaStream_t as int)."),
    EBJDAT_FASTCALL(sgld_step_host, kSgldStepHost,
                    "sgld_step_host(x, grad, state, n, grad_count, state_count, x_dtype, grad_dtype, "
                    "step_size, noise_std, grad_clip, lo, hi, C, H, W, threads): sgld_step on CPU memory, the same element math "
                    "and Philox stream in a host loop over up to `threads` threads."),
    PyMethodDef{nullptr, nullptr, 0, nullptr}};

void register_sgld(py::module_& m) { add_fastcall(m, sgld_defs); }
EBJDAT_REGISTER(register_sgld);

}  // namespace
}  // namespace ebjdat
