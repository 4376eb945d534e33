// pgd_step and pgd_init: argument checks, dtype dispatch, the CUDA launches and the host
// loops (pgd_step_host, pgd_init_host) over the same element math, for CPU memory. The l2
// host loops replay the device's per-sample reduction order (L2Plan in pgd.cuh and
// reduce.cuh), so they give the device's results bit for bit.
#include <vector>

#include "common.h"
#include "cpu_loops.h"
#include "fastcall.h"
#include "pgd.cuh"
#include "reduce.cuh"

namespace ebjdat {
namespace {

// block_sum_host on each of the three sums of part[0 .. T).
template <class C>
L2Sums<C> tree_sums_host(const std::vector<L2Sums<C>>& part, int T) {
  std::vector<C> v(T);
  L2Sums<C> out;
  for (int t = 0; t < T; ++t) v[t] = part[t].gg;
  out.gg = block_sum_host(v.data(), T);
  for (int t = 0; t < T; ++t) v[t] = part[t].dg;
  out.dg = block_sum_host(v.data(), T);
  for (int t = 0; t < T; ++t) v[t] = part[t].dd;
  out.dd = block_sum_host(v.data(), T);
  return out;
}

template <class C>
PgdParams<C> params(double alpha, bool has_eps, double eps, double lo, double hi) {
  return PgdParams<C>{scalar<C>(alpha), scalar<C>(has_eps ? eps : 0.0), scalar<C>(lo),
                      scalar<C>(hi), has_eps};
}

// The sums of elements [lo, hi) as the device's block of T threads forms them.
template <class XT, class GT>
L2Sums<compute_t<XT>> l2_chunk_sums_host(const XT* x, const GT* g, const XT* xo, int64_t lo,
                                         int64_t hi, int T, bool has_eps,
                                         std::vector<L2Sums<compute_t<XT>>>& part) {
  using C = compute_t<XT>;
  constexpr int N = kElemsPerThread<XT>;
  for (int t = 0; t < T; ++t) {
    L2Sums<C> s{C(0), C(0), C(0)};
    for (int64_t base = lo + (int64_t)t * N; base < hi; base += (int64_t)T * N) {
      const int count = base + N <= hi ? N : (int)(hi - base);
      XT xs[N] = {}, os[N] = {};
      GT gs[N] = {};
      for (int j = 0; j < count; ++j) {
        xs[j] = x[base + j];
        gs[j] = g[base + j];
        os[j] = xo[base + j];
      }
      l2_accumulate<C, N>(s, xs, gs, os, count, has_eps);
    }
    part[t] = s;
  }
  return tree_sums_host(part, T);
}

template <class XT, class GT>
void pgd_step_l2_loop(XT* x, const GT* g, const XT* xo, int64_t n, int64_t batch,
                      const PgdParams<compute_t<XT>>& p, int threads) {
  using C = compute_t<XT>;
  const int64_t D = n / batch;
  const L2Plan plan = l2_plan(batch, D, kElemsPerThread<XT>);
  const int T = plan.threads;
  parallel_for(batch, loop_threads(n, batch, threads), [&](int64_t b0, int64_t b1) {
    std::vector<L2Sums<C>> part(T), chunks(plan.splits);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t end = (b + 1) * D;
      for (int64_t c = 0; c < plan.splits; ++c) {
        const int64_t lo = b * D + c * plan.chunk;
        chunks[c] = l2_chunk_sums_host(x, g, xo, lo, lo + plan.chunk < end ? lo + plan.chunk : end,
                                       T, p.has_eps, part);
      }
      L2Sums<C> total = chunks[0];
      if (plan.splits > 1) {  // the finish kernel: thread t takes chunks t, t + T, ...
        for (int t = 0; t < T; ++t) {
          L2Sums<C> s{C(0), C(0), C(0)};
          for (int64_t c = t; c < plan.splits; c += T) {
            s.gg = s.gg + chunks[c].gg;
            s.dg = s.dg + chunks[c].dg;
            s.dd = s.dd + chunks[c].dd;
          }
          part[t] = s;
        }
        total = tree_sums_host(part, T);
      }
      C gn, f;
      l2_step_scalars(total, p, gn, f);
      XT* xs = x + b * D;
      const GT* gs = g + b * D;
      const XT* os = xo + b * D;
      simd_for(D, [=](int64_t m) { xs[m] = l2_step_element<XT, GT>(xs[m], gs[m], os[m], gn, f, p); });
    }
  });
}

template <class XT, class GT>
void pgd_step_loop(XT* x, const GT* g, const XT* xo, int64_t n, int64_t batch,
                   const PgdParams<compute_t<XT>>& p, bool l2, int threads) {
  if (l2) return pgd_step_l2_loop<XT, GT>(x, g, xo, n, batch, p, threads);
  host_for(n, threads, [=](int64_t m) { x[m] = pgd_step_linf_element<XT, GT>(x[m], g[m], xo[m], p); });
}

// The linf random start: each element's uniform from its Philox word (word_of), in blocks
// of cpu_words (the device's words, bit for bit).
template <class XT>
void pgd_init_linf_loop(XT* x, const XT* xo, uint64_t seed, uint64_t offset, int64_t n,
                        const PgdParams<compute_t<XT>>& p, const Layout& L, int threads) {
  if (!L.channels_last) {
    word_blocks(seed, offset, n, threads, [=](int64_t base, int64_t m, const uint32_t* w) {
      XT* xb = x + base;
      const XT* ob = xo + base;
      simd_for(m, [=](int64_t j) { xb[j] = pgd_init_linf_element<XT>(ob[j], w[j], p); });
    });
  } else {
    channels_last_words(seed, offset, L, n, threads, [=](int64_t m, uint32_t w) {
      x[m] = pgd_init_linf_element<XT>(xo[m], w, p);
    });
  }
}

// The l2 random start: the device's plan and order of sums (L2Plan, l2_init_sq_partial,
// block_sum), samples over `threads` threads.
template <class XT>
void pgd_init_l2_loop(XT* x, const XT* xo, uint64_t seed, uint64_t offset, int64_t n, int64_t batch,
                      const PgdParams<compute_t<XT>>& p, const Layout& L, int threads) {
  using C = compute_t<XT>;
  constexpr int N = kElemsPerThread<XT>;
  const int64_t D = n / batch;
  const L2Plan plan = l2_plan(batch, D, N);
  const int T = plan.threads;
  parallel_for(batch, loop_threads(n, batch, threads), [&](int64_t b0, int64_t b1) {
    std::vector<C> part(T), chunks(plan.splits);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t end = (b + 1) * D;
      for (int64_t c = 0; c < plan.splits; ++c) {
        const int64_t lo = b * D + c * plan.chunk, hi = lo + plan.chunk < end ? lo + plan.chunk : end;
        for (int t = 0; t < T; ++t) part[t] = l2_init_sq_partial<C, N>(seed, offset, L, lo, hi, n, t, T);
        chunks[c] = block_sum_host(part.data(), T);
      }
      C zsq = chunks[0];
      if (plan.splits > 1) {  // the finish kernel: thread t takes chunks t, t + T, ...
        for (int t = 0; t < T; ++t) {
          C s = C(0);
          for (int64_t c = t; c < plan.splits; c += T) s = s + chunks[c];
          part[t] = s;
        }
        zsq = block_sum_host(part.data(), T);
      }
      const C scale = l2_init_scale<C>(seed, offset, n, b, zsq, p);
      for (int64_t m = b * D; m < end; ++m)
        x[m] = l2_init_element<XT>(xo[m], l2_init_z<C>(seed, offset, L, m), scale, p);
    }
  });
}

template <class XT>
void pgd_init_loop(XT* x, const XT* xo, int64_t* state, int64_t n, int64_t batch,
                   const PgdParams<compute_t<XT>>& p, bool l2, const Layout& L, int threads) {
  const uint64_t seed = (uint64_t)state[0], offset = (uint64_t)state[1];
  if (l2)
    pgd_init_l2_loop<XT>(x, xo, seed, offset, n, batch, p, L, threads);
  else
    pgd_init_linf_loop<XT>(x, xo, seed, offset, n, p, L, threads);
  state[1] = (int64_t)(offset + counters_for((uint64_t)n) + (l2 ? (uint64_t)batch : 0));
}

void check_pgd(uintptr_t x, uintptr_t xo, int64_t n, int64_t xo_count, int64_t batch, int x_dtype,
               bool l2, bool has_eps, double eps) {
  check_count(n);
  check_elements("x_orig", xo_count, n, "those of x");
  check_dtype("x", x_dtype);
  check_ptr("x", x, n);
  check_ptr("x_orig", xo, n);
  if (l2) check_batch(batch, n);
  if (has_eps && !(eps >= 0)) throw py::value_error("eps must be >= 0");
}

void pgd_step_host(uintptr_t x, uintptr_t grad, uintptr_t xo, int64_t n, int64_t grad_count,
                   int64_t xo_count, int64_t batch, int x_dtype, int grad_dtype, double alpha,
                   bool has_eps, double eps, bool l2, double lo, double hi, int threads) {
  check_pgd(x, xo, n, xo_count, batch, x_dtype, l2, has_eps, eps);
  check_elements("grad", grad_count, n, "those of x");
  check_dtype("grad", grad_dtype);
  check_ptr("grad", grad, n);
  check_threads(threads);
  HostNoGil nogil(n);
  dispatch_dtype(x_dtype, [&](auto xt) {
    using XT = decltype(xt);
    dispatch_dtype(grad_dtype, [&](auto gt) {
      using GT = decltype(gt);
      pgd_step_loop<XT, GT>(as_ptr<XT>(x), as_ptr<const GT>(grad), as_ptr<const XT>(xo), n,
                            batch, params<compute_t<XT>>(alpha, has_eps, eps, lo, hi), l2, threads);
    });
  });
}

void pgd_step(uintptr_t x, uintptr_t grad, uintptr_t xo, int64_t n, int64_t grad_count,
              int64_t xo_count, int64_t batch, int x_dtype, int grad_dtype, double alpha, bool has_eps,
              double eps, bool l2, double lo, double hi, uintptr_t scratch, int64_t scratch_count,
              int device, uintptr_t stream) {
  check_pgd(x, xo, n, xo_count, batch, x_dtype, l2, has_eps, eps);
  check_elements("grad", grad_count, n, "those of x");
  check_dtype("grad", grad_dtype);
  check_ptr("grad", grad, n);
  const char* err = nullptr;
  {
    py::gil_scoped_release nogil;
    dispatch_dtype(x_dtype, [&](auto xt) {
      using XT = decltype(xt);
      dispatch_dtype(grad_dtype, [&](auto gt) {
        using GT = decltype(gt);
        err = EBJDAT_LAUNCH(pgd_step_launch<XT, GT>(as_ptr<XT>(x), as_ptr<const GT>(grad), as_ptr<const XT>(xo),
                                                    n, batch, params<compute_t<XT>>(alpha, has_eps, eps, lo, hi),
                                                    l2, as_ptr<compute_t<XT>>(scratch), scratch_count, device,
                                                    reinterpret_cast<void*>(stream)));
      });
    });
  }
  raise_if_error("pgd_step", err);
}

// Scratch values (of x's compute type: fp64 for fp64 x, else fp32) pgd_step and pgd_init
// need for an l2 call (pgd_init uses one per chunk of the same plan).
int64_t pgd_l2_scratch(int64_t n, int64_t batch, int x_dtype) {
  check_count(n);
  check_dtype("x", x_dtype);
  check_batch(batch, n);
  int64_t count = 0;
  dispatch_dtype(x_dtype, [&](auto xt) { count = l2_scratch<decltype(xt)>(n, batch); });
  return count;
}

void pgd_init_host(uintptr_t x, uintptr_t xo, uintptr_t state, int64_t n, int64_t xo_count,
                   int64_t state_count, int64_t batch, int x_dtype, double eps, bool l2, double lo,
                   double hi, int64_t C, int64_t H, int64_t W, int threads) {
  check_pgd(x, xo, n, xo_count, batch, x_dtype, l2, true, eps);
  check_state(state, state_count);
  check_threads(threads);
  check_offset_host(state, counters_for((uint64_t)n) + (l2 ? (uint64_t)batch : 0));
  const Layout L = make_layout(C, H, W, n);
  HostNoGil nogil(n);
  dispatch_dtype(x_dtype, [&](auto xt) {
    using XT = decltype(xt);
    pgd_init_loop<XT>(as_ptr<XT>(x), as_ptr<const XT>(xo), as_ptr<int64_t>(state), n, batch,
                      params<compute_t<XT>>(0.0, true, eps, lo, hi), l2, L, threads);
  });
}

void pgd_init(uintptr_t x, uintptr_t xo, uintptr_t state, int64_t n, int64_t xo_count,
              int64_t state_count, int64_t batch, int x_dtype, double eps, bool l2, double lo,
              double hi, int64_t C, int64_t H, int64_t W, uintptr_t scratch, int64_t scratch_count,
              int device, uintptr_t stream) {
  check_pgd(x, xo, n, xo_count, batch, x_dtype, l2, true, eps);
  check_state(state, state_count);
  const Layout L = make_layout(C, H, W, n);
  const char* err = nullptr;
  {
    py::gil_scoped_release nogil;
    dispatch_dtype(x_dtype, [&](auto xt) {
      using XT = decltype(xt);
      err = EBJDAT_LAUNCH(pgd_init_launch<XT>(as_ptr<XT>(x), as_ptr<const XT>(xo), as_ptr<int64_t>(state), n,
                                              batch, params<compute_t<XT>>(0.0, true, eps, lo, hi), l2, L,
                                              as_ptr<compute_t<XT>>(scratch), scratch_count, device,
                                              reinterpret_cast<void*>(stream)));
    });
  }
  raise_if_error("pgd_init", err);
}

constexpr char kPgdStep[] = "pgd_step";
constexpr char kPgdStepHost[] = "pgd_step_host";
constexpr char kPgdInit[] = "pgd_init";
constexpr char kPgdInitHost[] = "pgd_init_host";

PyMethodDef pgd_defs[] = {
    EBJDAT_FASTCALL(pgd_step, kPgdStep,
                    "pgd_step(x, grad, x_orig, n, grad_count, x_orig_count, batch, x_dtype, grad_dtype, "
                    "alpha, has_eps, eps, l2, lo, hi, scratch, scratch_count, device, stream): one PGD step (norm linf, or l2 "
                    "when l2 is true) on CUDA memory, launched on `stream`."),
    EBJDAT_FASTCALL(pgd_step_host, kPgdStepHost,
                    "pgd_step_host(x, grad, x_orig, n, grad_count, x_orig_count, batch, x_dtype, "
                    "grad_dtype, alpha, has_eps, eps, l2, lo, hi, threads): pgd_step on CPU memory (same element math), up to `threads` "
                    "threads."),
    EBJDAT_FASTCALL(pgd_init, kPgdInit,
                    "pgd_init(x, x_orig, state, n, x_orig_count, state_count, batch, x_dtype, eps, l2, "
                    "lo, hi, C, H, W, scratch, scratch_count, device, stream): PGD random start on CUDA memory (l2: scratch as "
                    "for pgd_step), advancing the generator."),
    EBJDAT_FASTCALL(pgd_init_host, kPgdInitHost,
                    "pgd_init_host(x, x_orig, state, n, x_orig_count, state_count, batch, x_dtype, eps, "
                    "l2, lo, hi, C, H, W, threads): pgd_init on CPU memory (same math, same Philox stream)."),
    PyMethodDef{nullptr, nullptr, 0, nullptr}};

void register_pgd(py::module_& m) {
  using namespace pybind11::literals;
  m.def("pgd_l2_scratch", &pgd_l2_scratch,
        "Scratch values (x's compute type) pgd_step with l2=True needs on the device; 0: none.",
        "n"_a, "batch"_a, "x_dtype"_a);
  add_fastcall(m, pgd_defs);
}
EBJDAT_REGISTER(register_pgd);

}  // namespace
}  // namespace ebjdat
