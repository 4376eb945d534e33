// pgd_step and pgd_init: argument checks, dtype dispatch, the CUDA launches and the host
// loops (pgd_step_host, pgd_init_host) over the same element math, for CPU memory. The l2
// host loops replay the device's per-sample reduction order (reduce.cuh), so they give
// the device's results bit for bit.
#include <vector>

#include "common.h"
#include "reduce.cuh"

namespace ebjdat {
namespace {

template <class C>
PgdParams<C> params(double alpha, bool has_eps, double eps, double lo, double hi) {
  return PgdParams<C>{scalar<C>(alpha), scalar<C>(has_eps ? eps : 0.0), scalar<C>(lo),
                      scalar<C>(hi), has_eps};
}

template <class XT, class GT>
void pgd_step_loop(XT* x, const GT* g, const XT* xo, int64_t n, int64_t batch,
                   const PgdParams<compute_t<XT>>& p, bool l2) {
  using C = compute_t<XT>;
  if (!l2) {
    for (int64_t m = 0; m < n; ++m) x[m] = pgd_step_linf_element<XT, GT>(x[m], g[m], xo[m], p);
    return;
  }
  const int64_t D = n / batch;
  const int T = l2_threads(D);
  std::vector<C> part(T);
  for (int64_t b = 0; b < batch; ++b) {
    XT* xb = x + b * D;
    const GT* gb = g + b * D;
    const XT* ob = xo + b * D;
    for (int t = 0; t < T; ++t) part[t] = l2_grad_sq_partial<C>(gb, D, t, T);
    const C gn = sqrt_rn(block_sum_host(part.data(), T)) + l2_eps_floor<C>();
    C f = C(1);
    if (p.has_eps) {
      for (int t = 0; t < T; ++t) part[t] = l2_diff_sq_partial<C>(xb, gb, ob, D, t, T, gn, p);
      f = l2_factor(sqrt_rn(block_sum_host(part.data(), T)), p);
    }
    for (int64_t i = 0; i < D; ++i) xb[i] = l2_step_element<XT, GT>(xb[i], gb[i], ob[i], gn, f, p);
  }
}

template <class XT>
void pgd_init_loop(XT* x, const XT* xo, int64_t* state, int64_t n, int64_t batch,
                   const PgdParams<compute_t<XT>>& p, bool l2, const Layout& L) {
  using C = compute_t<XT>;
  const uint64_t seed = (uint64_t)state[0], offset = (uint64_t)state[1];
  if (!l2) {
    LogicalWalk walk(L, 0);
    for (int64_t m = 0; m < n; ++m, walk.next())
      x[m] = pgd_init_linf_element<XT>(xo[m], word_of(seed, offset, (uint64_t)walk.get()), p);
  } else {
    const int64_t D = n / batch;
    const int T = l2_threads(D);
    std::vector<C> part(T);
    for (int64_t b = 0; b < batch; ++b) {
      for (int t = 0; t < T; ++t) part[t] = l2_init_sq_partial<C>(seed, offset, L, b, D, t, T);
      const C scale = l2_init_scale<C>(seed, offset, n, b, block_sum_host(part.data(), T), p);
      for (int64_t m = b * D; m < (b + 1) * D; ++m)
        x[m] = l2_init_element<XT>(xo[m], l2_init_z<C>(seed, offset, L, m), scale, p);
    }
  }
  state[1] = (int64_t)(offset + counters_for((uint64_t)n) + (l2 ? (uint64_t)batch : 0));
}

void check_pgd(uintptr_t x, uintptr_t xo, int64_t n, int64_t batch, int x_dtype, bool l2,
               bool has_eps, double eps) {
  check_count(n);
  check_dtype("x", x_dtype);
  check_ptr("x", x, n);
  check_ptr("x_orig", xo, n);
  if (l2) check_batch(batch, n);
  if (has_eps && !(eps >= 0)) throw py::value_error("eps must be >= 0");
}

void pgd_step_host(uintptr_t x, uintptr_t grad, uintptr_t xo, int64_t n, int64_t batch,
                   int x_dtype, int grad_dtype, double alpha, bool has_eps, double eps, bool l2,
                   double lo, double hi) {
  check_pgd(x, xo, n, batch, x_dtype, l2, has_eps, eps);
  check_dtype("grad", grad_dtype);
  check_ptr("grad", grad, n);
  py::gil_scoped_release nogil;
  dispatch_dtype(x_dtype, [&](auto xt) {
    using XT = decltype(xt);
    dispatch_dtype(grad_dtype, [&](auto gt) {
      using GT = decltype(gt);
      pgd_step_loop<XT, GT>(as_ptr<XT>(x), as_ptr<const GT>(grad), as_ptr<const XT>(xo), n,
                            batch, params<compute_t<XT>>(alpha, has_eps, eps, lo, hi), l2);
    });
  });
}

void pgd_step(uintptr_t x, uintptr_t grad, uintptr_t xo, int64_t n, int64_t batch, int x_dtype,
              int grad_dtype, double alpha, bool has_eps, double eps, bool l2, double lo,
              double hi, int device, uintptr_t stream) {
  check_pgd(x, xo, n, batch, x_dtype, l2, has_eps, eps);
  check_dtype("grad", grad_dtype);
  check_ptr("grad", grad, n);
  const char* err = nullptr;
  {
    py::gil_scoped_release nogil;
    dispatch_dtype(x_dtype, [&](auto xt) {
      using XT = decltype(xt);
      dispatch_dtype(grad_dtype, [&](auto gt) {
        using GT = decltype(gt);
        err = pgd_step_launch<XT, GT>(as_ptr<XT>(x), as_ptr<const GT>(grad), as_ptr<const XT>(xo),
                                      n, batch, params<compute_t<XT>>(alpha, has_eps, eps, lo, hi),
                                      l2, device, reinterpret_cast<void*>(stream));
      });
    });
  }
  raise_if_error("pgd_step", err);
}

void pgd_init_host(uintptr_t x, uintptr_t xo, uintptr_t state, int64_t n, int64_t batch,
                   int x_dtype, double eps, bool l2, double lo, double hi, int64_t C, int64_t H,
                   int64_t W) {
  check_pgd(x, xo, n, batch, x_dtype, l2, true, eps);
  check_ptr("state", state, 1);
  const Layout L = make_layout(C, H, W, n);
  py::gil_scoped_release nogil;
  dispatch_dtype(x_dtype, [&](auto xt) {
    using XT = decltype(xt);
    pgd_init_loop<XT>(as_ptr<XT>(x), as_ptr<const XT>(xo), as_ptr<int64_t>(state), n, batch,
                      params<compute_t<XT>>(0.0, true, eps, lo, hi), l2, L);
  });
}

void pgd_init(uintptr_t x, uintptr_t xo, uintptr_t state, int64_t n, int64_t batch, int x_dtype,
              double eps, bool l2, double lo, double hi, int64_t C, int64_t H, int64_t W,
              int device, uintptr_t stream) {
  check_pgd(x, xo, n, batch, x_dtype, l2, true, eps);
  check_ptr("state", state, 1);
  const Layout L = make_layout(C, H, W, n);
  const char* err = nullptr;
  {
    py::gil_scoped_release nogil;
    dispatch_dtype(x_dtype, [&](auto xt) {
      using XT = decltype(xt);
      err = pgd_init_launch<XT>(as_ptr<XT>(x), as_ptr<const XT>(xo), as_ptr<int64_t>(state), n,
                                batch, params<compute_t<XT>>(0.0, true, eps, lo, hi), l2, L,
                                device, reinterpret_cast<void*>(stream));
    });
  }
  raise_if_error("pgd_init", err);
}

}  // namespace

void register_pgd(py::module_& m) {
  using namespace pybind11::literals;
  m.def("pgd_step", &pgd_step,
        "One PGD step (norm linf, or l2 when l2=True) on CUDA memory, launched on `stream`.",
        "x"_a, "grad"_a, "x_orig"_a, "n"_a, "batch"_a, "x_dtype"_a, "grad_dtype"_a, "alpha"_a,
        "has_eps"_a, "eps"_a, "l2"_a, "lo"_a, "hi"_a, "device"_a, "stream"_a);
  m.def("pgd_step_host", &pgd_step_host, "pgd_step on CPU memory (same element math).",
        "x"_a, "grad"_a, "x_orig"_a, "n"_a, "batch"_a, "x_dtype"_a, "grad_dtype"_a, "alpha"_a,
        "has_eps"_a, "eps"_a, "l2"_a, "lo"_a, "hi"_a);
  m.def("pgd_init", &pgd_init,
        "PGD random start on CUDA memory, advancing the generator state by n.",
        "x"_a, "x_orig"_a, "state"_a, "n"_a, "batch"_a, "x_dtype"_a, "eps"_a, "l2"_a, "lo"_a,
        "hi"_a, "C"_a, "H"_a, "W"_a, "device"_a, "stream"_a);
  m.def("pgd_init_host", &pgd_init_host, "pgd_init on CPU memory (same math, same Philox stream).",
        "x"_a, "x_orig"_a, "state"_a, "n"_a, "batch"_a, "x_dtype"_a, "eps"_a, "l2"_a, "lo"_a,
        "hi"_a, "C"_a, "H"_a, "W"_a);
}

}  // namespace ebjdat
