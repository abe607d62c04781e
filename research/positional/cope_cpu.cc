// CoPE's counts and their interpolation, fused into one pass over the [B,H,T,S] logits, for XLA's CPU backend
// (an XLA FFI custom call; research/positional/cope.py: `counted_bias`, research/runtime/native.py builds it).
//
// For one row of gate logits l_j (query i against keys j < S; the queries are the last T of the S keys, so
// key j is visible iff j <= i + S - T):
//   g_j = sigmoid(l_j) if visible else 0,   p_j = min(sum_{t >= j} g_t, N - 1)
//   bias_j = scale * (z[lo] + (p_j - lo) * (z[lo + 1] - z[lo])),   lo = floor(p_j), z[N] read as z[N - 1]
// The backward pass takes d bias and the logits, recomputes the gates and counts (the same code as the forward,
// so the same bits), and returns d logits (through the reverse cumulative sum and the sigmoid) and d z (the
// interpolation weights scattered into the row's N values). A third target returns the gates and counts alone,
// for tests. Same equations as the jnp path in cope.py; tests/test_native.py checks the two against each other,
// values and gradients.
//
// XLA's CPU backend runs these as separate passes over [B,H,T,S] arrays: a sigmoid, a reverse cumulative sum
// lowered to blocked reduce-windows, a gather and, backward, a scatter-add that runs element by element. Here each
// row stays in the L1 cache from the sigmoid to the interpolation, and only the bias (forward) and d logits
// (backward) are written out at [B,H,T,S]: gates and counts never leave the cache.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kLanes = 4;  // rows advanced together in the sequential sums: independent add chains

struct Shape {
  int64_t rows, T, S, N;  // rows = the product of every axis but the last (all queries of all heads)
};

ffi::Error ShapeOf(ffi::AnyBuffer::Dimensions logits, ffi::AnyBuffer::Dimensions z, Shape* shape) {
  const int64_t rank = logits.size();
  if (rank < 2 || static_cast<int64_t>(z.size()) != rank) {
    return ffi::Error::InvalidArgument("cope: logits [...,T,S] and z [...,T,N] must have the same rank >= 2");
  }
  int64_t rows = 1;
  for (int64_t a = 0; a + 1 < rank; ++a) {
    if (logits[a] != z[a]) return ffi::Error::InvalidArgument("cope: logits and z differ in a leading axis");
    rows *= logits[a];
  }
  *shape = {rows, logits[rank - 2], logits[rank - 1], z[rank - 1]};
  if (shape->N < 2) return ffi::Error::InvalidArgument("cope: z needs at least 2 values per row");
  return ffi::Error::Success();
}

// floor(p) as an index in [0, last]. The integer clamp keeps a NaN or infinite count (a diverged run) from
// reading outside the row: the output is then NaN, as on the jnp path, instead of a crash.
inline int32_t Floor(float p, int32_t last) { return std::clamp(static_cast<int32_t>(p), 0, last); }

// The number of keys row r sees.
inline int64_t Visible(int64_t r, const Shape& s) { return std::min(s.S, r % s.T + s.S - s.T + 1); }

// Cumulative sums over [0, n) of L rows `stride` apart (from the end when kReverse), clamped to `top` on output
// (the running sums are not clamped). `out` may be `in`. The L rows advance together: independent add chains.
template <bool kReverse, int L>
inline void ScanLanes(const float* in, float* out, int64_t stride, int64_t n, float top) {
  float acc[L] = {};
  for (int64_t k = 0; k < n; ++k) {
    const int64_t j = kReverse ? n - 1 - k : k;
    for (int a = 0; a < L; ++a) {
      acc[a] += in[a * stride + j];
      out[a * stride + j] = std::min(acc[a], top);
    }
  }
}

template <bool kReverse>
inline void Scan(const float* in, float* out, int64_t lanes, int64_t stride, int64_t n,
                 float top = std::numeric_limits<float>::max()) {
  if (lanes == kLanes) return ScanLanes<kReverse, kLanes>(in, out, stride, n, top);
  for (int64_t a = 0; a < lanes; ++a) ScanLanes<kReverse, 1>(in + a * stride, out + a * stride, stride, n, top);
}

// Gates and clamped counts of the `lanes` rows from q0 on (see the top of the file) into g and p ([lanes, S], row
// stride S); keys past a row's visible ones get gate 0 and count 0. -> the most keys any of these rows sees.
// The forward and the backward pass both call this one compiled function (not inlined, so that no inlining site
// can compile it differently), so the backward sees the forward's counts bit for bit.
__attribute__((noinline)) int64_t CountRows(const Shape& s, const float* __restrict L, int64_t q0, int64_t lanes,
                                            float* __restrict g, float* __restrict p) {
  int64_t most = 0;
  for (int64_t a = 0; a < lanes; ++a) {
    const int64_t visible = Visible(q0 + a, s);
    const float* __restrict l = L + (q0 + a) * s.S;
    float* __restrict ga = g + a * s.S;
    for (int64_t j = 0; j < visible; ++j) ga[j] = 1.0f / (1.0f + std::exp(-l[j]));
    std::fill(ga + visible, ga + s.S, 0.0f);
    std::fill(p + a * s.S + visible, p + (a + 1) * s.S, 0.0f);
    most = std::max(most, visible);
  }
  Scan<true>(g, p, lanes, s.S, most, static_cast<float>(s.N - 1));
  return most;
}

// Rows [r0, r1) of the counts alone (the `research_cope_counts` target: what the tests check the passes against).
void CountsRows(const Shape& s, const float* __restrict L, float* __restrict G, float* __restrict P, int64_t r0,
                int64_t r1) {
  for (int64_t q0 = r0; q0 < r1; q0 += kLanes) {
    CountRows(s, L, q0, std::min(kLanes, r1 - q0), G + q0 * s.S, P + q0 * s.S);
  }
}

// Rows [r0, r1) of the forward pass (see the top of the file). Keys past a row's visible ones have count 0, so
// their bias is scale * z[0]; only the visible ones are interpolated. Gates and counts stay in a scratch of
// kLanes rows (in cache), not written out: the backward pass recomputes them from the logits.
void ForwardRows(const Shape& s, const float* __restrict L, const float* __restrict Z, float scale,
                 float* __restrict B, int64_t r0, int64_t r1) {
  const int32_t last = static_cast<int32_t>(s.N - 1);
  std::unique_ptr<float[]> scratch(new float[2 * kLanes * s.S]);
  float* __restrict g = scratch.get();
  float* __restrict counts = scratch.get() + kLanes * s.S;
  for (int64_t q0 = r0; q0 < r1; q0 += kLanes) {
    const int64_t lanes = std::min(kLanes, r1 - q0);
    CountRows(s, L, q0, lanes, g, counts);
    for (int64_t a = 0; a < lanes; ++a) {
      const int64_t r = q0 + a;
      const int64_t visible = Visible(r, s);
      const float* __restrict zr = Z + r * s.N;
      const float* __restrict p = counts + a * s.S;
      float* __restrict b = B + r * s.S;
      for (int64_t j = 0; j < visible; ++j) {
        const int32_t lo = Floor(p[j], last);
        const int32_t hi = std::min(lo + 1, last);
        const float zlo = zr[lo];
        b[j] = scale * (zlo + (p[j] - static_cast<float>(lo)) * (zr[hi] - zlo));
      }
      std::fill(b + visible, b + s.S, scale * zr[0]);
    }
  }
}

// Rows [r0, r1) of the backward pass, from the logits (gates and counts recomputed, as in the forward pass).
void BackwardRows(const Shape& s, const float* __restrict D, const float* __restrict L, const float* __restrict Z,
                  float scale, float* __restrict DL, float* __restrict DZ, int64_t r0, int64_t r1) {
  const int32_t last = static_cast<int32_t>(s.N - 1);
  std::unique_ptr<float[]> scratch(new float[(2 * kLanes + 2) * s.S]);
  std::unique_ptr<int32_t[]> floors(new int32_t[s.S]);
  float* __restrict gates = scratch.get();
  float* __restrict counts = scratch.get() + kLanes * s.S;
  float* __restrict to_lo = scratch.get() + 2 * kLanes * s.S;  // one row's interpolation weights times d bias
  float* __restrict to_hi = to_lo + s.S;
  int32_t* __restrict lows = floors.get();  // and its floor(p_j)
  for (int64_t q0 = r0; q0 < r1; q0 += kLanes) {
    const int64_t lanes = std::min(kLanes, r1 - q0);
    const int64_t most = CountRows(s, L, q0, lanes, gates, counts);
    for (int64_t a = 0; a < lanes; ++a) {
      const int64_t r = q0 + a;
      const int64_t visible = Visible(r, s);
      const float* __restrict d = D + r * s.S;
      const float* __restrict zr = Z + r * s.N;
      const float* __restrict p = counts + a * s.S;
      float* __restrict dp = DL + r * s.S;  // d counts first, turned into d logits below
      float* __restrict dzr = DZ + r * s.N;
      std::fill(dzr, dzr + s.N, 0.0f);
      float masked = 0;  // keys past the visible ones read z[0] with weight 1
      for (int64_t j = visible; j < s.S; ++j) masked += d[j];
      dzr[0] = scale * masked;
      // Two loops: the first has no stores that depend on lo, so it vectorises (gathers of z); the second is the
      // scatter-add into d z alone, in the same order as one loop would add (results bitwise the same).
      for (int64_t j = 0; j < visible; ++j) {
        const int32_t lo = Floor(p[j], last);
        const int32_t hi = std::min(lo + 1, last);
        const float w = p[j] - static_cast<float>(lo);  // 0 at the top row N - 1 (and wherever p clamps)
        const float dj = scale * d[j];
        const float zlo = zr[lo], zhi = zr[hi];
        dp[j] = dj * (zhi - zlo);  // 0 at the top row: a clamped count has no gradient
        lows[j] = lo;
        to_lo[j] = dj - w * dj;
        to_hi[j] = w * dj;
      }
      for (int64_t j = 0; j < visible; ++j) {
        dzr[lows[j]] += to_lo[j];
        dzr[std::min(lows[j] + 1, last)] += to_hi[j];
      }
      std::fill(dp + visible, dp + s.S, 0.0f);
    }
    Scan<false>(DL + q0 * s.S, DL + q0 * s.S, lanes, s.S, most);  // d g_t = sum_{j <= t} d p_j
    for (int64_t a = 0; a < lanes; ++a) {
      const int64_t visible = Visible(q0 + a, s);
      const float* __restrict g = gates + a * s.S;
      float* __restrict dl = DL + (q0 + a) * s.S;
      for (int64_t t = 0; t < visible; ++t) dl[t] *= g[t] * (1.0f - g[t]);
      std::fill(dl + visible, dl + s.S, 0.0f);
    }
  }
}

// Runs body(r0, r1) over [0, rows) in chunks of `chunk` rows, on the calling thread and on the other threads of
// XLA's CPU pool. The caller takes chunks too and waits only for chunks a helper has claimed, so it never waits on
// a helper that has not started (the pool's threads may all be busy): a helper that starts late finds no chunk
// left and returns without touching the buffers. The shared state lives as long as the last helper.
template <typename Body>
void ParallelRows(ffi::ThreadPool& pool, int64_t rows, int64_t chunk, const Body& body) {
  struct Work {
    std::atomic<int64_t> next{0}, finished{0};
    int64_t chunks = 0;
  };
  auto work = std::make_shared<Work>();
  work->chunks = (rows + chunk - 1) / chunk;
  auto run = [work, rows, chunk, body]() {
    for (int64_t c; (c = work->next.fetch_add(1)) < work->chunks;) {
      body(c * chunk, std::min(rows, (c + 1) * chunk));
      work->finished.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads() - 1, work->chunks - 1);
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule(decltype(run)(run));  // each helper owns a copy
  run();
  while (work->finished.load(std::memory_order_acquire) < work->chunks) std::this_thread::yield();
}

constexpr int64_t kChunkRows = 256;  // a multiple of kLanes

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> logits, ffi::Buffer<ffi::F32> z, float scale,
                   ffi::ResultBuffer<ffi::F32> bias) {
  Shape s;
  if (ffi::Error e = ShapeOf(logits.dimensions(), z.dimensions(), &s); e.failure()) return e;
  const float *L = logits.typed_data(), *Z = z.typed_data();
  float* B = bias->typed_data();
  ParallelRows(pool, s.rows, kChunkRows, [=](int64_t r0, int64_t r1) { ForwardRows(s, L, Z, scale, B, r0, r1); });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dbias, ffi::Buffer<ffi::F32> logits,
                    ffi::Buffer<ffi::F32> z, float scale, ffi::ResultBuffer<ffi::F32> dlogits,
                    ffi::ResultBuffer<ffi::F32> dz) {
  Shape s;
  if (ffi::Error e = ShapeOf(dbias.dimensions(), z.dimensions(), &s); e.failure()) return e;
  const float *D = dbias.typed_data(), *L = logits.typed_data(), *Z = z.typed_data();
  float *DL = dlogits->typed_data(), *DZ = dz->typed_data();
  ParallelRows(pool, s.rows, kChunkRows,
               [=](int64_t r0, int64_t r1) { BackwardRows(s, D, L, Z, scale, DL, DZ, r0, r1); });
  return ffi::Error::Success();
}

ffi::Error Counts(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> logits, ffi::Buffer<ffi::F32> z,
                  ffi::ResultBuffer<ffi::F32> gates, ffi::ResultBuffer<ffi::F32> counts) {
  Shape s;
  if (ffi::Error e = ShapeOf(logits.dimensions(), z.dimensions(), &s); e.failure()) return e;
  const float* L = logits.typed_data();
  float *G = gates->typed_data(), *P = counts->typed_data();
  ParallelRows(pool, s.rows, kChunkRows, [=](int64_t r0, int64_t r1) { CountsRows(s, L, G, P, r0, r1); });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(research_cope_forward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // gate logits [...,T,S]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // z [...,T,N]
                                  .Attr<float>("scale")
                                  .Ret<ffi::Buffer<ffi::F32>>());  // bias [...,T,S]

XLA_FFI_DEFINE_HANDLER_SYMBOL(research_cope_backward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // d bias [...,T,S]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // gate logits (the forward's input)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // z
                                  .Attr<float>("scale")
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d logits [...,T,S]
                                  .Ret<ffi::Buffer<ffi::F32>>());  // d z [...,T,N]

XLA_FFI_DEFINE_HANDLER_SYMBOL(research_cope_counts, Counts,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // gate logits [...,T,S]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // z [...,T,N] (its shape only)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // gates [...,T,S]
                                  .Ret<ffi::Buffer<ffi::F32>>());  // clamped counts [...,T,S]
