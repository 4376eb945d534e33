// parallel_for's pool: workers started on first need and kept, woken per call through one
// condition variable; calls from several Python threads (the GIL is released) take turns.
// A forked child (DataLoader workers) has none of its parent's threads: it starts a pool
// of its own (pthread_atfork).
#include "cpu_threads.h"

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace ebjdat {
namespace {

class Pool {
 public:
  void run(int parts, const std::function<void(int)>& part) {
    std::lock_guard<std::mutex> turn(call_mu_);
    {
      std::lock_guard<std::mutex> lk(mu_);
      while (workers_ < parts - 1) {   // worker ids 1 .. parts - 1; they take this call's job
        std::thread(&Pool::work, this, ++workers_, generation_).detach();
      }
      job_ = &part;
      parts_ = parts;
      pending_ = parts - 1;
      ++generation_;
    }
    wake_.notify_all();
    part(0);
    std::unique_lock<std::mutex> lk(mu_);
    done_.wait(lk, [&] { return pending_ == 0; });
    job_ = nullptr;
  }

  int workers() {
    std::lock_guard<std::mutex> lk(mu_);
    return workers_;
  }

 private:
  // seen: the generation before the call that started this worker
  void work(int id, uint64_t seen) {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      wake_.wait(lk, [&] { return generation_ != seen; });
      seen = generation_;
      if (id >= parts_) continue;
      const std::function<void(int)>* job = job_;
      lk.unlock();
      (*job)(id);
      lk.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex call_mu_, mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* job_ = nullptr;
  int workers_ = 0, parts_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
};

// Leaked on purpose: detached workers may still wait on it while the process exits, and a
// forked child drops its parent's pool (whose workers did not survive the fork). Atomic:
// calls from several Python threads may create it at once; one of them wins.
std::atomic<Pool*> g_pool{nullptr};
std::once_flag g_atfork;

Pool& pool() {
  std::call_once(g_atfork, [] { pthread_atfork(nullptr, nullptr, [] { g_pool.store(nullptr); }); });
  Pool* p = g_pool.load();
  if (p == nullptr) {
    Pool* fresh = new Pool();
    if (g_pool.compare_exchange_strong(p, fresh)) {
      p = fresh;
    } else {
      delete fresh;   // another thread's pool won; p now holds it
    }
  }
  return *p;
}

}  // namespace

int pool_workers() {
  Pool* p = g_pool.load();
  return p == nullptr ? 0 : p->workers();
}

void parallel_for(int64_t units, int threads, const std::function<void(int64_t, int64_t)>& f) {
  if (units <= 0) return;
  const int parts = (int)(threads < units ? (threads > 1 ? threads : 1) : units);
  if (parts <= 1) return f(0, units);
  // part p takes units [p * units / parts, (p + 1) * units / parts)
  pool().run(parts, [&](int p) { f(units * p / parts, units * (p + 1) / parts); });
}

}  // namespace ebjdat
