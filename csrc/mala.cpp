// mala_propose and mala_accept: argument checks (every count and dtype, before any pointer
// is touched: the entries are reachable through torch.ops.ebjdat.*), dtype dispatch, the
// CUDA launches and the host loops over the same math (kernels/mala.cuh) for CPU memory.
#include <cmath>

#include "common.h"
#include "cpu_loops.h"
#include "sgld_host.h"
#include "fastcall.h"
#include "mala.cuh"

namespace ebjdat {
namespace {

void check_same_dtype(const char* name, int code, int want, const char* of) {
  check_dtype(name, code);
  if (code != want)
    throw py::value_error(std::string(name) + ": dtype code " + std::to_string(code) + ", expected " +
                          std::to_string(want) + " (" + of + ")");
}

struct ProposeArgs {
  Layout layout;
};

ProposeArgs check_propose(uintptr_t x_prop, uintptr_t x, uintptr_t grad, uintptr_t state, int64_t n,
                          int64_t x_count, int64_t grad_count, int64_t state_count, int x_prop_dtype,
                          int x_dtype, int grad_dtype, double step_size, int64_t C, int64_t H, int64_t W) {
  check_count(n);
  check_elements("x", x_count, n, "those of x_prop");
  check_elements("grad", grad_count, n, "those of x_prop");
  check_dtype("x_prop", x_prop_dtype);
  check_same_dtype("x", x_dtype, x_prop_dtype, "x_prop's");
  check_dtype("grad", grad_dtype);
  if (!(step_size >= 0) || !std::isfinite(step_size))
    throw py::value_error("step_size must be finite and >= 0, got " + std::to_string(step_size));
  check_ptr("x_prop", x_prop, n);
  check_ptr("x", x, n);
  check_ptr("grad", grad, n);
  if (n > 0) check_state(state, state_count);
  return ProposeArgs{make_layout(C, H, W, n)};
}

void mala_propose_host(uintptr_t x_prop, uintptr_t x, uintptr_t grad, uintptr_t state, int64_t n,
                       int64_t x_count, int64_t grad_count, int64_t state_count, int x_prop_dtype,
                       int x_dtype, int grad_dtype, double step_size, int64_t C, int64_t H, int64_t W,
                       int threads) {
  const ProposeArgs a = check_propose(x_prop, x, grad, state, n, x_count, grad_count, state_count,
                                      x_prop_dtype, x_dtype, grad_dtype, step_size, C, H, W);
  check_threads(threads);
  if (n == 0) return;
  check_offset_host(state, counters_for((uint64_t)n));
  HostNoGil nogil(n);
  dispatch_dtype(x_dtype, [&](auto xt) {
    using XT = decltype(xt);
    dispatch_dtype(grad_dtype, [&](auto gt) {
      using GT = decltype(gt);
      // the CUDA kernel's CPU twin: sgld_step's element with the proposal's parameters
      sgld_noisy_loop<XT, GT>(as_ptr<XT>(x_prop), as_ptr<const XT>(x), as_ptr<const GT>(grad),
                                as_ptr<int64_t>(state), n, mala_propose_params<compute_t<XT>>(step_size),
                                a.layout, threads);
    });
  });
}

void mala_propose(uintptr_t x_prop, uintptr_t x, uintptr_t grad, uintptr_t state, int64_t n,
                  int64_t x_count, int64_t grad_count, int64_t state_count, int x_prop_dtype, int x_dtype,
                  int grad_dtype, double step_size, int64_t C, int64_t H, int64_t W, int device,
                  uintptr_t stream) {
  const ProposeArgs a = check_propose(x_prop, x, grad, state, n, x_count, grad_count, state_count,
                                      x_prop_dtype, x_dtype, grad_dtype, step_size, C, H, W);
  const char* err = nullptr;
  {
    py::gil_scoped_release nogil;
    dispatch_dtype(x_dtype, [&](auto xt) {
      using XT = decltype(xt);
      dispatch_dtype(grad_dtype, [&](auto gt) {
        using GT = decltype(gt);
        err = EBJDAT_LAUNCH(mala_propose_launch<XT, GT>(as_ptr<XT>(x_prop), as_ptr<const XT>(x), as_ptr<const GT>(grad),
                                                        as_ptr<int64_t>(state), n,
                                                        mala_propose_params<compute_t<XT>>(step_size), a.layout, device,
                                                        reinterpret_cast<void*>(stream)));
      });
    });
  }
  raise_if_error("mala_propose", err);
}

// The per-sample tensors, in the entries' order: energy, energy_prop, log_q_fwd, log_q_rev.
constexpr const char* kSampleNames[4] = {"energy", "energy_prop", "log_q_fwd", "log_q_rev"};

void check_accept(uintptr_t x, uintptr_t x_prop, const uintptr_t (&sample)[4], uintptr_t accepted,
                  uintptr_t state, int64_t n, int64_t x_prop_count, int64_t batch,
                  const int64_t (&sample_count)[4], int64_t accepted_count, int64_t state_count, int x_dtype,
                  int x_prop_dtype, const int (&sample_dtype)[4]) {
  check_count(n);
  if (batch < 0 || (batch == 0 && n != 0))
    throw py::value_error("batch (x.shape[0]) must be >= 0, and > 0 when x has elements; got batch=" +
                          std::to_string(batch) + ", n=" + std::to_string(n));
  check_batch(batch, n);
  check_elements("x_prop", x_prop_count, n, "those of x");
  for (int i = 0; i < 4; ++i) check_elements(kSampleNames[i], sample_count[i], batch, "one per sample of x");
  check_elements("accepted", accepted_count, batch, "one per sample of x");
  check_dtype("x", x_dtype);
  check_same_dtype("x_prop", x_prop_dtype, x_dtype, "x's");
  check_dtype(kSampleNames[0], sample_dtype[0]);
  for (int i = 1; i < 4; ++i) check_same_dtype(kSampleNames[i], sample_dtype[i], sample_dtype[0], "energy's");
  check_ptr("x", x, n);
  check_ptr("x_prop", x_prop, n);
  for (int i = 0; i < 4; ++i) check_ptr(kSampleNames[i], sample[i], batch);
  check_ptr("accepted", accepted, batch);
  if (batch > 0) check_state(state, state_count);
}

// The CPU twin of mala_accept_kernel: the same decisions, the accepted rows copied.
template <class XT, class ET>
void mala_accept_loop(XT* x, const XT* x_prop, const ET* e, const ET* e_prop, const ET* lq_fwd,
                      const ET* lq_rev, bool* accepted, int64_t* state, int64_t n, int64_t batch) {
  const uint64_t seed = (uint64_t)state[0], offset = (uint64_t)state[1];
  const int64_t D = n / batch;
  for (int64_t b = 0; b < batch; ++b) {
    const bool take = mala_accepts<ET>(seed, offset, b, e[b], e_prop[b], lq_fwd[b], lq_rev[b]);
    accepted[b] = take;
    if (take)
      for (int64_t m = b * D; m < (b + 1) * D; ++m) x[m] = x_prop[m];
  }
  state[1] = (int64_t)(offset + counters_for((uint64_t)batch));
}

#define EBJDAT_ACCEPT_PARAMS                                                                      \
  uintptr_t x, uintptr_t x_prop, uintptr_t energy, uintptr_t energy_prop, uintptr_t log_q_fwd,     \
      uintptr_t log_q_rev, uintptr_t accepted, uintptr_t state, int64_t n, int64_t x_prop_count,   \
      int64_t batch, int64_t energy_count, int64_t energy_prop_count, int64_t log_q_fwd_count,     \
      int64_t log_q_rev_count, int64_t accepted_count, int64_t state_count, int x_dtype,           \
      int x_prop_dtype,                                                                            \
      int energy_dtype, int energy_prop_dtype, int log_q_fwd_dtype, int log_q_rev_dtype

#define EBJDAT_ACCEPT_CHECK                                                                        \
  const uintptr_t sample[4] = {energy, energy_prop, log_q_fwd, log_q_rev};                       \
  check_accept(x, x_prop, sample, accepted, state, n, x_prop_count, batch,                         \
               {energy_count, energy_prop_count, log_q_fwd_count, log_q_rev_count}, accepted_count, \
               state_count,                                                                        \
               x_dtype, x_prop_dtype,                                                              \
               {energy_dtype, energy_prop_dtype, log_q_fwd_dtype, log_q_rev_dtype})

// Calls f.template operator()<XT, ET>() for the storage types of x and the per-sample tensors.
template <class F>
void dispatch_accept(int x_dtype, int sample_dtype, F&& f) {
  dispatch_dtype(x_dtype, [&](auto xt) {
    dispatch_dtype(sample_dtype, [&](auto et) { f(xt, et); });
  });
}

void mala_accept_host(EBJDAT_ACCEPT_PARAMS) {
  EBJDAT_ACCEPT_CHECK;
  if (batch == 0) return;
  check_offset_host(state, counters_for((uint64_t)batch));
  HostNoGil nogil(n + batch);
  dispatch_accept(x_dtype, energy_dtype, [&](auto xt, auto et) {
    using XT = decltype(xt);
    using ET = decltype(et);
    mala_accept_loop<XT, ET>(as_ptr<XT>(x), as_ptr<const XT>(x_prop), as_ptr<const ET>(energy),
                             as_ptr<const ET>(energy_prop), as_ptr<const ET>(log_q_fwd),
                             as_ptr<const ET>(log_q_rev), as_ptr<bool>(accepted), as_ptr<int64_t>(state), n,
                             batch);
  });
}

void mala_accept(EBJDAT_ACCEPT_PARAMS, int device, uintptr_t stream) {
  EBJDAT_ACCEPT_CHECK;
  const char* err = nullptr;
  {
    py::gil_scoped_release nogil;
    dispatch_accept(x_dtype, energy_dtype, [&](auto xt, auto et) {
      using XT = decltype(xt);
      using ET = decltype(et);
      err = EBJDAT_LAUNCH(mala_accept_launch<XT, ET>(as_ptr<XT>(x), as_ptr<const XT>(x_prop), as_ptr<const ET>(energy),
                                                     as_ptr<const ET>(energy_prop), as_ptr<const ET>(log_q_fwd),
                                                     as_ptr<const ET>(log_q_rev), as_ptr<bool>(accepted),
                                                     as_ptr<int64_t>(state), n, batch, device,
                                                     reinterpret_cast<void*>(stream)));
    });
  }
  raise_if_error("mala_accept", err);
}

constexpr char kMalaPropose[] = "mala_propose";
constexpr char kMalaProposeHost[] = "mala_propose_host";
constexpr char kMalaAccept[] = "mala_accept";
constexpr char kMalaAcceptHost[] = "mala_accept_host";

PyMethodDef mala_defs[] = {
    EBJDAT_FASTCALL(mala_propose, kMalaPropose,
                    "mala_propose(x_prop, x, grad, state, n, x_count, grad_count, state_count, x_prop_dtype, "
                    "x_dtype, grad_dtype, step_size, C, H, W, device, stream): x_prop <- x + step_size*grad + "
                    "sqrt(2 step_size)*z on CUDA memory, launched on `stream` (a cudaStream_t as int)."),
    EBJDAT_FASTCALL(mala_propose_host, kMalaProposeHost,
                    "mala_propose_host(x_prop, x, grad, state, n, x_count, grad_count, state_count, "
                    "x_prop_dtype, x_dtype, grad_dtype, step_size, C, H, W, threads): mala_propose on CPU memory (same "
                    "math, same Philox stream), up to `threads` threads."),
    EBJDAT_FASTCALL(mala_accept, kMalaAccept,
                    "mala_accept(x, x_prop, energy, energy_prop, log_q_fwd, log_q_rev, accepted, state, n, "
                    "x_prop_count, batch, energy_count, energy_prop_count, log_q_fwd_count, "
                    "log_q_rev_count, accepted_count, state_count, x_dtype, x_prop_dtype, energy_dtype, "
                    "energy_prop_dtype, log_q_fwd_dtype, log_q_rev_dtype, device, stream): the "
                    "Metropolis decisions and accepted rows on CUDA memory."),
    EBJDAT_FASTCALL(mala_accept_host, kMalaAcceptHost,
                    "mala_accept_host(the arguments of mala_accept without device, stream): on CPU memory."),
    PyMethodDef{nullptr, nullptr, 0, nullptr}};

void register_mala(py::module_& m) { add_fastcall(m, mala_defs); }
EBJDAT_REGISTER(register_mala);

}  // namespace
}  // namespace ebjdat
