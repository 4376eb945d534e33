// The noisy Langevin loop of the cpu backend, shared by sgld_step_host (out = in = x) and
// mala_propose_host (out = x_prop, in = x): out[i] = sgld_step_element(in[i], g[i], z_i) with
// z_i the Philox normal of logical element i of a call at the state's offset, which then
// advances by ceil(n / 4). Blocks and threads as cpu_loops.h splits them.
#pragma once

#include "cpu_loops.h"
#include "sgld.cuh"

namespace ebjdat {

template <class XT, class GT>
void sgld_noisy_loop(XT* out, const XT* in, const GT* g, int64_t* state, int64_t n,
                     const SgldParams<compute_t<XT>>& p, const Layout& L, int threads) {
  const uint64_t seed = (uint64_t)state[0], offset = (uint64_t)state[1];
  if (!L.channels_last) {
    normal_blocks(seed, offset, n, threads, [=](int64_t base, int64_t m, const float* z) {
      XT* ob = out + base;
      const XT* ib = in + base;
      const GT* gb = g + base;
      simd_for(m, [=](int64_t j) { ob[j] = sgld_step_element<XT, GT>(ib[j], gb[j], z[j], true, p); });
    });
  } else {
    channels_last_normals(seed, offset, L, n, threads, [=](int64_t m, float z) {
      out[m] = sgld_step_element<XT, GT>(in[m], g[m], z, true, p);
    });
  }
  state[1] = (int64_t)(offset + counters_for((uint64_t)n));
}

}  // namespace ebjdat
