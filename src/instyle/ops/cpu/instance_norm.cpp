// CPU instance-norm kernels: forward (statistics + fused affine/residual/ReLU) and the
// analytic backward, for float32, bfloat16 and float16 tensors in two layouts:
//   planar:        (N, C, S) contiguous, S = prod(spatial)   (NCHW, NCDHW, NCL)
//   channels-last: (N, S, C) contiguous                      (NHWC, NDHWC)
// Plain C++ without torch headers (it builds in seconds); instance_norm.py loads it with
// ctypes and passes raw pointers. Statistics are fp32: every chunk (planar) or block of rows
// (channels-last) gets a two-pass mean/M2 shifted by the plane's first element, chunks are
// merged with Chan's formula in double. No E[x^2] - E[x]^2 anywhere.
//
// Every loop works on 16-lane fp32 vectors `V`: AVX-512 registers where the compiler targets
// AVX-512 (bf16/f16 widened on load, rounded to nearest even on store), else a portable
// 16-float struct (build with -DINSTYLE_PORTABLE to force it). Outputs larger than
// kStreamBytes are written with non-temporal stores: they would leave the cache before
// anyone reads them, and streaming saves the read-for-ownership of every output line.
//
// Parallel split: planar tensors split over planes, or, with few planes (fewer than four per
// thread and not a multiple of the thread count), every plane splits into chunks over all
// threads. Channels-last tensors split into blocks of rows; samples are processed in groups
// of about kGroupBytes so that the second read of x (apply after statistics) hits the cache.
//
// Determinism: chunk and block boundaries depend only on the shape, each chunk is reduced
// by one thread in a fixed lane order and chunks are merged in a fixed order, so the bits
// do not depend on the thread count or the schedule.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && !defined(INSTYLE_PORTABLE)
#define INSTYLE_AVX512 1
#include <immintrin.h>
#endif

namespace {

constexpr int kW = 16;                        // lanes per vector
constexpr int kMaxSlots = 8;                  // channels-last: vectors held in registers per group
constexpr int64_t kChunk = 2048;              // planar: elements per two-pass chunk (8 KB fp32, in L1)
constexpr int64_t kBlockElems = 8192;         // channels-last: about rows * C per block
constexpr int64_t kGroupBytes = 8 << 20;      // channels-last: bytes of input per sample group
constexpr int64_t kStreamBytes = 16 << 20;    // outputs at least this big bypass the cache

enum DType { kF32 = 0, kBF16 = 1, kF16 = 2 };

struct bf16 { uint16_t bits; };
struct f16 { uint16_t bits; };

inline uint32_t as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---------------------------------------------------------------- scalar conversions
// Branch-free bit arithmetic, round to nearest even; the portable vectors use these.
inline float ld(const float* p) { return *p; }
inline float ld(const bf16* p) { return as_float(static_cast<uint32_t>(p->bits) << 16); }
inline float ld(const f16* p) {
  // F. Giesen's half_to_float_fast5: shift into place, rebias by multiplying with 2^112
  // (exact, also for subnormal halves), mark inf/NaN.
  const uint32_t h = p->bits;
  const float f = as_float((h & 0x7fffu) << 13) * 5.192296858534828e+33f;
  const uint32_t r = as_uint(f) | (f >= 65536.0f ? 0x7f800000u : 0u);
  return as_float(r | ((h & 0x8000u) << 16));
}

inline void st(float* p, float v) { *p = v; }
inline void st(bf16* p, float v) {
  const uint32_t u = as_uint(v);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x40u;  // quiet NaN
  p->bits = static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}
inline void st(f16* p, float v) {
  // after F. Giesen's float_to_half_fast3_rtne
  const uint32_t u = as_uint(v);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  const uint32_t big = a > 0x7f800000u ? 0x7e00u : 0x7c00u;                  // NaN, or inf / overflow
  const uint32_t sub = as_uint(as_float(a) + 0.5f) - 0x3f000000u;             // result is subnormal
  const uint32_t normal = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;        // rebias, round
  const uint32_t r = a >= 0x47800000u ? big : (a < 0x38800000u ? sub : normal);
  p->bits = static_cast<uint16_t>(r | sign);
}

// ---------------------------------------------------------------- 16-lane vectors
// load(p) / load(p, m): 16 elements widened to fp32 (masked lanes read nothing, give 0);
// store / stream: rounded back to the element type; hsum: a fixed reduction order.
#ifdef INSTYLE_AVX512
struct V {
  __m512 v;
};
using Mask = __mmask16;
inline Mask mask_n(int64_t n) { return n >= kW ? Mask(0xffff) : Mask((1u << n) - 1u); }
inline V vzero() { return {_mm512_setzero_ps()}; }
inline V vset(float a) { return {_mm512_set1_ps(a)}; }
inline V vload_f32(const float* p) { return {_mm512_loadu_ps(p)}; }
inline void vstore_f32(float* p, V a) { _mm512_storeu_ps(p, a.v); }
inline V operator+(V a, V b) { return {_mm512_add_ps(a.v, b.v)}; }
inline V operator-(V a, V b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline V operator*(V a, V b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline V fma(V a, V b, V c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline V maskz(Mask m, V a) { return {_mm512_maskz_mov_ps(m, a.v)}; }
inline V relu(V a) { return {_mm512_max_ps(_mm512_setzero_ps(), a.v)}; }  // NaN stays NaN, -0 stays -0
inline Mask positive(V a) { return _mm512_cmp_ps_mask(a.v, _mm512_setzero_ps(), _CMP_GT_OQ); }
inline float hsum(V a) { return _mm512_reduce_add_ps(a.v); }

inline V widen_bf16(__m256i h) { return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))}; }
inline __m256i narrow_bf16_bits(V a) {  // as st(bf16*): round to nearest even, NaN stays a quiet NaN
  const __m512i u = _mm512_castps_si512(a.v);
  const __m512i high = _mm512_srli_epi32(u, 16);
  const __m512i bias = _mm512_add_epi32(_mm512_and_si512(high, _mm512_set1_epi32(1)), _mm512_set1_epi32(0x7fff));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, bias), 16);
  const __m512i nan = _mm512_or_si512(high, _mm512_set1_epi32(0x40));
  const Mask is_nan =
      _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(is_nan, rounded, nan));
}
#if defined(__AVX512BF16__) && defined(__AVX512DQ__)
// vcvtneps2bf16 rounds to nearest even and quiets NaN exactly as above (checked on all 2^32
// inputs) but flushes subnormal inputs to zero: those (rare) vectors take the bit path.
inline __m256i narrow_bf16(V a) {
  if (_mm512_fpclass_ps_mask(a.v, 0x20)) return narrow_bf16_bits(a);  // 0x20: subnormal
  return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(a.v));
}
#else
inline __m256i narrow_bf16(V a) { return narrow_bf16_bits(a); }
#endif
constexpr int kHalfRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

inline V load(const float* p) { return {_mm512_loadu_ps(p)}; }
inline V load(const float* p, Mask m) { return {_mm512_maskz_loadu_ps(m, p)}; }
inline V load(const bf16* p) { return widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline V load(const bf16* p, Mask m) { return widen_bf16(_mm256_maskz_loadu_epi16(m, p)); }
inline V load(const f16* p) { return {_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))}; }
inline V load(const f16* p, Mask m) { return {_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p))}; }

inline void store(float* p, V a) { _mm512_storeu_ps(p, a.v); }
inline void store(float* p, V a, Mask m) { _mm512_mask_storeu_ps(p, m, a.v); }
inline void stream(float* p, V a) { _mm512_stream_ps(p, a.v); }  // p 64-byte aligned
inline void store(bf16* p, V a) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), narrow_bf16(a)); }
inline void store(bf16* p, V a, Mask m) { _mm256_mask_storeu_epi16(p, m, narrow_bf16(a)); }
inline void stream(bf16* p, V a) { _mm256_stream_si256(reinterpret_cast<__m256i*>(p), narrow_bf16(a)); }
inline void store(f16* p, V a) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(a.v, kHalfRound)); }
inline void store(f16* p, V a, Mask m) { _mm256_mask_storeu_epi16(p, m, _mm512_cvtps_ph(a.v, kHalfRound)); }
inline void stream(f16* p, V a) { _mm256_stream_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(a.v, kHalfRound)); }
inline void stream_fence() { _mm_sfence(); }
#else
struct V {
  float v[kW];
};
using Mask = uint32_t;
inline Mask mask_n(int64_t n) { return n >= kW ? Mask(0xffff) : Mask((1u << n) - 1u); }
template <class F>
inline V lanes(F f) {
  V r;
#pragma omp simd
  for (int l = 0; l < kW; ++l) r.v[l] = f(l);
  return r;
}
inline V vzero() { return lanes([](int) { return 0.f; }); }
inline V vset(float a) { return lanes([=](int) { return a; }); }
inline V vload_f32(const float* p) { return lanes([=](int l) { return p[l]; }); }
inline void vstore_f32(float* p, V a) { std::memcpy(p, a.v, sizeof a.v); }
inline V operator+(V a, V b) { return lanes([&](int l) { return a.v[l] + b.v[l]; }); }
inline V operator-(V a, V b) { return lanes([&](int l) { return a.v[l] - b.v[l]; }); }
inline V operator*(V a, V b) { return lanes([&](int l) { return a.v[l] * b.v[l]; }); }
inline V fma(V a, V b, V c) { return lanes([&](int l) { return std::fma(a.v[l], b.v[l], c.v[l]); }); }
inline V maskz(Mask m, V a) { return lanes([&](int l) { return (m >> l) & 1u ? a.v[l] : 0.f; }); }
inline V relu(V a) { return lanes([&](int l) { return a.v[l] < 0.f ? 0.f : a.v[l]; }); }
inline Mask positive(V a) {
  Mask m = 0;
  for (int l = 0; l < kW; ++l) m |= Mask(a.v[l] > 0.f) << l;
  return m;
}
inline float hsum(V a) {
  for (int w = kW / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) a.v[l] += a.v[l + w];
  return a.v[0];
}
template <typename T>
inline V load(const T* p) {
  return lanes([=](int l) { return ld(p + l); });
}
template <typename T>
inline V load(const T* p, Mask m) {
  V r;
  for (int l = 0; l < kW; ++l) r.v[l] = (m >> l) & 1u ? ld(p + l) : 0.f;
  return r;
}
template <typename T>
inline void store(T* p, V a) {
  for (int l = 0; l < kW; ++l) st(p + l, a.v[l]);
}
template <typename T>
inline void store(T* p, V a, Mask m) {
  for (int l = 0; l < kW; ++l)
    if ((m >> l) & 1u) st(p + l, a.v[l]);
}
template <typename T>
inline void stream(T* p, V a) {
  store(p, a);
}
inline void stream_fence() {}
#endif

// store a full vector, streaming or not (nt: p aligned, see stream_ok)
template <typename T>
inline void put(T* p, V a, bool nt) {
  if (nt) stream(p, a);
  else store(p, a);
}
// a possibly partial vector (callers pass nt only where every vector is full)
template <typename T>
inline void put(T* p, V a, Mask m, bool nt) {
  if (m == mask_n(kW)) put(p, a, nt);
  else store(p, a, m);
}

// rsqrt(var + eps), 0 where that is inf (eps == 0 on a constant plane), as the reference.
inline float inv_std(float var, float eps) {
  float r = 1.0f / std::sqrt(var + eps);
  return std::isinf(r) ? 0.0f : r;
}

// Statistics fp32 cannot give: a mean or variance that overflowed, or (eps ~ 0 only) a variance
// so small that the squares summed into it underflowed (squares below 2^-126 are lost; they do
// not matter once var + eps >= 2^-100). On finite input Python redoes such planes with scaled
// values (the reference's plane_stats).
constexpr float kTinyVar = 0x1p-100f;
inline bool unreliable(float mean, float var, float eps) {
  return !std::isfinite(mean) || !std::isfinite(var) || !(var + eps >= kTinyVar);
}

template <typename T>
bool all_finite(const T* x, int64_t n, int64_t stride) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(ld(x + i * stride))) return false;
  return true;
}

// Chan et al.: merge (count, mean, M2) of a chunk into a running total.
struct Moments {
  double n = 0, mean = 0, m2 = 0;
  void merge(double nb, double mean_b, double m2_b) {
    double n_ab = n + nb;
    double delta = mean_b - mean;
    mean += delta * (nb / n_ab);
    m2 += m2_b + delta * delta * (n * nb / n_ab);
    n = n_ab;
  }
};

// Non-temporal stores need aligned vectors: a 64-byte aligned base and every vector start
// a multiple of 16 elements from it; `period` is the distance (in elements) between rows
// or planes that start a run of vectors.
template <typename T>
bool stream_ok(const void* out, int64_t numel, int64_t period) {
  return numel * static_cast<int64_t>(sizeof(T)) >= kStreamBytes && reinterpret_cast<uintptr_t>(out) % 64 == 0 &&
         period % kW == 0;
}

// Planes split into chunks over all threads when there are too few to share out evenly.
inline bool split_planes(int64_t planes, int64_t S, int nt) {
  return nt > 1 && planes < 4 * nt && planes % nt != 0 && S >= 2 * kChunk;
}

// ================================================================ planar
// Shifted two-pass moments of one chunk: mean of (x - k) and M2.
template <typename T>
inline void chunk_moments(const T* x, int64_t len, float k, float& mean, float& m2) {
  const V kv = vset(k);
  V a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
  int64_t i = 0;
  for (; i + 4 * kW <= len; i += 4 * kW) {
    a0 = a0 + (load(x + i) - kv);
    a1 = a1 + (load(x + i + kW) - kv);
    a2 = a2 + (load(x + i + 2 * kW) - kv);
    a3 = a3 + (load(x + i + 3 * kW) - kv);
  }
  for (; i + kW <= len; i += kW) a0 = a0 + (load(x + i) - kv);
  if (i < len) {
    const Mask m = mask_n(len - i);
    a1 = a1 + maskz(m, load(x + i, m) - kv);
  }
  mean = hsum((a0 + a1) + (a2 + a3)) / static_cast<float>(len);
  const V mv = vset(mean);
  a0 = a1 = a2 = a3 = vzero();
  auto sq = [&](V acc, V xv) {
    const V d = (xv - kv) - mv;
    return fma(d, d, acc);
  };
  for (i = 0; i + 4 * kW <= len; i += 4 * kW) {
    a0 = sq(a0, load(x + i));
    a1 = sq(a1, load(x + i + kW));
    a2 = sq(a2, load(x + i + 2 * kW));
    a3 = sq(a3, load(x + i + 3 * kW));
  }
  for (; i + kW <= len; i += kW) a0 = sq(a0, load(x + i));
  if (i < len) {
    const Mask m = mask_n(len - i);
    const V d = maskz(m, (load(x + i, m) - kv) - mv);
    a1 = fma(d, d, a1);
  }
  m2 = hsum((a0 + a1) + (a2 + a3));
}

// Writes Mean/Var/Rstd/Flag of plane p from its merged moments; false when flagged.
template <typename T>
bool finish_plane(const T* x, int64_t S, float k, const Moments& m, float eps, int64_t p, float* Mean, float* Rstd,
                  float* Var, uint8_t* Flag) {
  const float mean = static_cast<float>(k + m.mean);
  const float var = static_cast<float>(m.m2 / static_cast<double>(S));
  Flag[p] = unreliable(mean, var, eps) && all_finite(x, S, 1);
  Mean[p] = mean;
  Var[p] = var;
  Rstd[p] = inv_std(var, eps);
  return !Flag[p];
}

// y = act((x - mean) * a + b + r) over len elements
template <typename T, bool RES, bool RELU>
inline void apply_range(const T* x, const T* r, T* y, int64_t len, float mean, float a, float b, bool nt) {
  const V mv = vset(mean), av = vset(a), bv = vset(b);
  auto f = [&](V xv, V rv) {
    V v = fma(xv - mv, av, bv);
    if (RES) v = v + rv;
    if (RELU) v = relu(v);
    return v;
  };
  int64_t i = 0;
#pragma GCC unroll 2
  for (; i + kW <= len; i += kW) put(y + i, f(load(x + i), RES ? load(r + i) : vzero()), nt);
  if (i < len) {
    const Mask m = mask_n(len - i);
    store(y + i, f(load(x + i, m), RES ? load(r + i, m) : vzero()), m);
  }
}

template <typename T, bool RES, bool RELU>
void fwd_planar(const T* X,       // (N, C, S) input
                const T* R,       // (N, C, S) residual or null
                T* Y,             // (N, C, S) output
                const float* W,   // (C,) or null
                const float* B,   // (C,) or null
                float* Mean,      // (N, C) written when stats, else read
                float* Rstd,      // (N, C) likewise
                float* Var,       // (N, C) written when stats
                uint8_t* Flag,    // (N, C) written when stats: 1 = redo with scaled values
                int64_t N, int64_t C, int64_t S, bool stats, float eps, bool stream, int nt) {
  const int64_t planes = N * C;
  auto scale = [&](int64_t p) { return W ? Rstd[p] * W[p % C] : Rstd[p]; };
  auto shift = [&](int64_t p) { return B ? B[p % C] : 0.f; };
  if (!split_planes(planes, S, nt)) {
#pragma omp parallel num_threads(nt)
    {
#pragma omp for schedule(static) nowait
      for (int64_t p = 0; p < planes; ++p) {
        const T* x = X + p * S;
        if (stats) {
          const float k = ld(x);  // shift: the plane's first element
          Moments m;
          for (int64_t c0 = 0; c0 < S; c0 += kChunk) {
            float mb, q;
            const int64_t len = std::min(kChunk, S - c0);
            chunk_moments(x + c0, len, k, mb, q);
            m.merge(static_cast<double>(len), mb, q);
          }
          if (!finish_plane(x, S, k, m, eps, p, Mean, Rstd, Var, Flag)) continue;
        }
        apply_range<T, RES, RELU>(x, RES ? R + p * S : nullptr, Y + p * S, S, Mean[p], scale(p), shift(p), stream);
      }
      if (stream) stream_fence();
    }
    return;
  }
  // few planes: each plane's chunks are shared by all threads
  const int64_t chunks = (S + kChunk - 1) / kChunk;
  std::vector<float> chunk_mean(chunks), chunk_m2(chunks);
#pragma omp parallel num_threads(nt)
  {
    for (int64_t p = 0; p < planes; ++p) {
      const T* x = X + p * S;
      if (stats) {
        const float k = ld(x);
#pragma omp for schedule(static)
        for (int64_t ch = 0; ch < chunks; ++ch)
          chunk_moments(x + ch * kChunk, std::min(kChunk, S - ch * kChunk), k, chunk_mean[ch], chunk_m2[ch]);
#pragma omp single
        {
          Moments m;
          for (int64_t ch = 0; ch < chunks; ++ch)
            m.merge(static_cast<double>(std::min(kChunk, S - ch * kChunk)), chunk_mean[ch], chunk_m2[ch]);
          finish_plane(x, S, k, m, eps, p, Mean, Rstd, Var, Flag);
        }
        if (Flag[p]) continue;
      }
      const float mean = Mean[p], a = scale(p), b = shift(p);
#pragma omp for schedule(static)
      for (int64_t ch = 0; ch < chunks; ++ch) {
        const int64_t off = p * S + ch * kChunk;
        apply_range<T, RES, RELU>(X + off, RES ? R + off : nullptr, Y + off, std::min(kChunk, S - ch * kChunk), mean,
                                  a, b, stream);
      }
    }
    if (stream) stream_fence();
  }
}

// sum(g) and sum(g * (x - mean)) over one chunk, g = dy * [y > 0]
template <typename T, bool RELU>
inline void chunk_grad_sums(const T* dy, const T* x, const T* y, int64_t len, float mean, float& sg, float& sgx) {
  const V mv = vset(mean);
  V g0 = vzero(), g1 = vzero(), h0 = vzero(), h1 = vzero();
  auto grad = [&](int64_t i, Mask m) {
    const V g = load(dy + i, m);
    return RELU ? maskz(positive(load(y + i, m)), g) : g;
  };
  const Mask full = mask_n(kW);
  int64_t i = 0;
  for (; i + 2 * kW <= len; i += 2 * kW) {
    const V ga = grad(i, full), gb = grad(i + kW, full);
    g0 = g0 + ga;
    g1 = g1 + gb;
    h0 = fma(ga, load(x + i) - mv, h0);
    h1 = fma(gb, load(x + i + kW) - mv, h1);
  }
  for (; i < len; i += kW) {
    const Mask m = mask_n(len - i);
    const V g = grad(i, m);
    g0 = g0 + g;
    h0 = fma(g, maskz(m, load(x + i, m) - mv), h0);
  }
  sg = hsum(g0 + g1);
  sgx = hsum(h0 + h1);
}

// dx = k1 * g + k2 * xhat + k3, dres = g over len elements
template <typename T, bool RELU, bool DRES>
inline void grad_range(const T* dy, const T* x, const T* y, T* dx, T* dr, int64_t len, float mean, float rstd, float k1,
                       float k2, float k3, bool nt) {
  const V mv = vset(mean), rv = vset(rstd), k1v = vset(k1), k2v = vset(k2), k3v = vset(k3);
  auto step = [&](int64_t i, Mask m) {
    V g = load(dy + i, m);
    if (RELU) g = maskz(positive(load(y + i, m)), g);
    const V xhat = (load(x + i, m) - mv) * rv;  // formed first: rstd^2 underflows for |x| ~ 1e25
    put(dx + i, fma(k1v, g, fma(k2v, xhat, k3v)), m, nt);
    if (DRES) put(dr + i, g, m, nt);
  };
  int64_t i = 0;
  for (; i + kW <= len; i += kW) step(i, mask_n(kW));
  if (i < len) step(i, mask_n(len - i));
}

// g = dy * [y > 0]; xhat = (x - mean) * rstd
// dx = rstd * w * (g - sum(g)/S - xhat * sum(g * xhat)/S)     (input statistics)
// dx = rstd * w * g                                           (running statistics)
// dw = sum_n sum(g * xhat); db = sum_n sum(g); dres = g
template <typename T, bool RELU, bool DRES>
void bwd_planar(const T* DY,        // (N, C, S)
                const T* X,         // (N, C, S) forward input
                const T* Y,         // (N, C, S) forward output, read with RELU only
                const float* Mean,  // (N, C)
                const float* Rstd,  // (N, C)
                const float* W,     // (C,) or null
                T* DX,              // (N, C, S)
                T* DR,              // (N, C, S) with DRES: the residual's gradient g
                double* Sg,         // (N, C) sum(g)
                double* Sgx,        // (N, C) sum(g * xhat)
                int64_t N, int64_t C, int64_t S, bool stats, bool stream, int nt) {
  const int64_t planes = N * C;
  const float inv_s = 1.0f / static_cast<float>(S);
  struct K {
    float k1, k2, k3;
  };
  auto coefficients = [&](int64_t p, double sg, double sgx) {
    Sg[p] = sg;
    Sgx[p] = sgx * Rstd[p];
    const float k1 = W ? Rstd[p] * W[p % C] : Rstd[p];
    return K{k1, stats ? -k1 * static_cast<float>(Sgx[p]) * inv_s : 0.f,  // times xhat
             stats ? -k1 * static_cast<float>(sg) * inv_s : 0.f};
  };
  auto y_at = [&](int64_t off) { return RELU ? Y + off : nullptr; };
  auto dr_at = [&](int64_t off) { return DRES ? DR + off : nullptr; };
  if (!split_planes(planes, S, nt)) {
#pragma omp parallel num_threads(nt)
    {
#pragma omp for schedule(static) nowait
      for (int64_t p = 0; p < planes; ++p) {
        const int64_t off = p * S;
        double sg = 0, sgx = 0;
        for (int64_t c0 = 0; c0 < S; c0 += kChunk) {
          float a, b;
          chunk_grad_sums<T, RELU>(DY + off + c0, X + off + c0, y_at(off + c0), std::min(kChunk, S - c0), Mean[p], a, b);
          sg += a;
          sgx += b;
        }
        const K k = coefficients(p, sg, sgx);
        grad_range<T, RELU, DRES>(DY + off, X + off, y_at(off), DX + off, dr_at(off), S, Mean[p], Rstd[p], k.k1, k.k2,
                                  k.k3, stream);
      }
      if (stream) stream_fence();
    }
    return;
  }
  const int64_t chunks = (S + kChunk - 1) / kChunk;
  std::vector<float> chunk_g(chunks), chunk_gx(chunks);
  K k{};
#pragma omp parallel num_threads(nt)
  {
    for (int64_t p = 0; p < planes; ++p) {
#pragma omp for schedule(static)
      for (int64_t ch = 0; ch < chunks; ++ch) {
        const int64_t off = p * S + ch * kChunk;
        chunk_grad_sums<T, RELU>(DY + off, X + off, y_at(off), std::min(kChunk, S - ch * kChunk), Mean[p], chunk_g[ch],
                                 chunk_gx[ch]);
      }
#pragma omp single
      {
        double sg = 0, sgx = 0;
        for (int64_t ch = 0; ch < chunks; ++ch) {
          sg += chunk_g[ch];
          sgx += chunk_gx[ch];
        }
        k = coefficients(p, sg, sgx);
      }
#pragma omp for schedule(static)
      for (int64_t ch = 0; ch < chunks; ++ch) {
        const int64_t off = p * S + ch * kChunk;
        grad_range<T, RELU, DRES>(DY + off, X + off, y_at(off), DX + off, dr_at(off), std::min(kChunk, S - ch * kChunk),
                                  Mean[p], Rstd[p], k.k1, k.k2, k.k3, stream);
      }
    }
    if (stream) stream_fence();
  }
}

// ================================================================ channels-last
// A block is `rows` consecutive rows of one sample (rows * C elements, contiguous). Its
// vectors map to channels in one of two ways:
//   period: when L = lcm(C, 16) <= 128, the block is read flat in steps of L elements;
//           vector v of a step, lane l, holds channel (16 v + l) % C (C = 3: 3 vectors,
//           C = 8: 1 vector covering 2 rows, C = 64: 4 vectors covering 1 row).
//   rows:   otherwise channels go in groups of up to 128 (8 vectors, the last one masked);
//           vector v of group g, lane l, holds channel 128 g + 16 v + l of every row.
// Either way each vector slot has fixed channels, so per-channel values live in NV
// registers ("slots") and the inner loops are unit-stride vector loads.
struct ClPlan {
  int64_t C, S;
  bool period;
  int64_t L;      // period: elements per step
  int64_t rows;   // rows per block (period: a multiple of L / C, except the sample's last)
  int64_t nb;     // blocks per sample
  int64_t groups; // rows: channel groups of up to kMaxSlots * kW
};

inline ClPlan cl_plan(int64_t C, int64_t S) {
  ClPlan q{};
  q.C = C;
  q.S = S;
  q.L = C / std::gcd(C, static_cast<int64_t>(kW)) * kW;
  q.period = q.L <= kMaxSlots * kW;
  const int64_t unit = q.period ? q.L / C : 1;
  q.rows = std::min(S, std::max(unit, kBlockElems / C / unit * unit));
  q.nb = (S + q.rows - 1) / q.rows;
  q.groups = q.period ? 1 : (C + kMaxSlots * kW - 1) / (kMaxSlots * kW);
  return q;
}

// One channel group: its slot count and, in the rows layout, its first channel.
struct Group {
  const ClPlan* q;
  int64_t c0;  // rows layout: first channel
  int nv;      // slots
  Mask mask(int v) const { return q->period ? mask_n(kW) : mask_n(q->C - c0 - v * kW); }
  int64_t first() const { return q->period ? 0 : c0; }                        // channels of the group:
  int64_t end() const { return q->period ? q->C : std::min(q->C, c0 + nv * kW); }  // [first, end)
};

inline Group group_of(const ClPlan& q, int64_t g) {
  if (q.period) return {&q, 0, static_cast<int>(q.L / kW)};
  const int64_t c0 = g * kMaxSlots * kW;
  return {&q, c0, static_cast<int>(std::min<int64_t>(kMaxSlots, (q.C - c0 + kW - 1) / kW))};
}

// The slot loops run over kMaxSlots with a guard `v < nv`: fully unrolled, so the slot
// arrays stay in registers, and one instantiation serves every slot count.
#define INSTYLE_FOR_SLOTS(v, nv) _Pragma("GCC unroll 8") for (int v = 0; v < kMaxSlots; ++v) if (v < (nv))

// slots[v] lane l = per_channel[channel(v, l)] (0 for masked lanes). Runs once per block
// and group, so it avoids divisions: the period layout counts channels modulo C.
inline void expand(const Group& gr, const float* per_channel, V* slots) {
  alignas(64) float lane[kW];
  const int64_t C = gr.q->C;
  if (!gr.q->period) {
    for (int v = 0; v < gr.nv; ++v) slots[v] = load(per_channel + gr.c0 + v * kW, gr.mask(v));
    return;
  }
  int64_t c = 0;
  for (int v = 0; v < gr.nv; ++v) {
    for (int l = 0; l < kW; ++l, c = c + 1 == C ? 0 : c + 1) lane[l] = per_channel[c];
    slots[v] = vload_f32(lane);
  }
}

// per_channel[c] = sum of the lanes holding channel c, in slot-then-lane order
inline void fold(const Group& gr, const V* slots, float* per_channel) {
  alignas(64) float lane[kW];
  const int64_t C = gr.q->C;
  if (!gr.q->period) {
    for (int v = 0; v < gr.nv; ++v) store(per_channel + gr.c0 + v * kW, slots[v], gr.mask(v));
    return;
  }
  std::fill(per_channel, per_channel + C, 0.f);
  int64_t c = 0;
  for (int v = 0; v < gr.nv; ++v) {
    vstore_f32(lane, slots[v]);
    for (int l = 0; l < kW; ++l, c = c + 1 == C ? 0 : c + 1) per_channel[c] += lane[l];
  }
}

// f(v, offset, mask) for every vector of a block of `rows` rows (offsets from its start)
template <class F>
inline void walk(const Group& gr, int64_t rows, F f) {
  const ClPlan& q = *gr.q;
  const int nv = gr.nv;
  if (q.period) {
    const int64_t len = rows * q.C, step = nv * kW;
    int64_t e = 0;
    for (; e + step <= len; e += step) INSTYLE_FOR_SLOTS(v, nv) f(v, e + v * kW, mask_n(kW));
    for (int v = 0; v < nv && e + v * kW < len; ++v) f(v, e + v * kW, mask_n(len - e - v * kW));
    return;
  }
  Mask m[kMaxSlots];
  for (int v = 0; v < nv; ++v) m[v] = gr.mask(v);
  for (int64_t r = 0; r < rows; ++r) INSTYLE_FOR_SLOTS(v, nv) f(v, r * q.C + gr.c0 + v * kW, m[v]);
}

// f(c, offset, mask) for every vector of a block of `rows` whole rows, channel c first (the
// rows layout with more than one group: per-channel values stay in (C,) arrays in L1).
template <class F>
inline void walk_wide(const ClPlan& q, int64_t rows, F f) {
  const int64_t full = q.C / kW * kW;
  const Mask tail = mask_n(q.C - full);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t base = r * q.C;
    for (int64_t c = 0; c < full; c += kW) f(c, base + c, mask_n(kW));
    if (full < q.C) f(full, base + full, tail);
  }
}

// body.run(group) for every channel group of the plan. With several groups (C > 128) a group
// would walk its band of every row at a stride of C elements; for power-of-two C those lines
// crowd into a few L1 sets and the second pass missed the cache (C = 512 ran at a quarter of
// C = 128's speed). Those plans run whole rows instead (body.run_wide), with the per-channel
// values in memory: the same operations per lane in the same order, so the same bits.
template <class Body>
inline void for_groups(const ClPlan& q, Body& body) {
  if (!q.period && q.groups > 1) {
    body.run_wide(q);
    return;
  }
  for (int64_t g = 0; g < q.groups; ++g) body.run(group_of(q, g));
}

// Block statistics: per channel, the block mean of (x - k) and its M2 (two passes, in L1).
template <typename T>
struct BlockStats {
  const T* xb;         // block start
  int64_t rows;
  const float* shift;  // (C,) k: row 0 of the sample, fp32
  float* mean;         // (C,) out
  float* m2;           // (C,) out
  void run(const Group& gr) {
    V k[kMaxSlots], acc[kMaxSlots], mb[kMaxSlots];
    expand(gr, shift, k);
    INSTYLE_FOR_SLOTS(v, gr.nv) acc[v] = vzero();
    walk(gr, rows, [&](int v, int64_t off, Mask m) { acc[v] = acc[v] + maskz(m, load(xb + off, m) - k[v]); });
    fold(gr, acc, mean);
    const float inv = 1.0f / static_cast<float>(rows);
    for (int64_t c = gr.first(); c < gr.end(); ++c) mean[c] *= inv;
    expand(gr, mean, mb);
    INSTYLE_FOR_SLOTS(v, gr.nv) acc[v] = vzero();
    walk(gr, rows, [&](int v, int64_t off, Mask m) {
      const V d = maskz(m, (load(xb + off, m) - k[v]) - mb[v]);
      acc[v] = fma(d, d, acc[v]);
    });
    fold(gr, acc, m2);
  }
  void run_wide(const ClPlan& q) {
    std::fill(mean, mean + q.C, 0.f);
    walk_wide(q, rows, [&](int64_t c, int64_t off, Mask m) {
      store(mean + c, load(mean + c, m) + maskz(m, load(xb + off, m) - load(shift + c, m)), m);
    });
    const float inv = 1.0f / static_cast<float>(rows);
    for (int64_t c = 0; c < q.C; ++c) mean[c] *= inv;
    std::fill(m2, m2 + q.C, 0.f);
    walk_wide(q, rows, [&](int64_t c, int64_t off, Mask m) {
      const V d = maskz(m, (load(xb + off, m) - load(shift + c, m)) - load(mean + c, m));
      store(m2 + c, fma(d, d, load(m2 + c, m)), m);
    });
  }
};

// y = act((x - mean) * a + b + r) over a block
template <typename T, bool RES, bool RELU>
struct BlockApply {
  const T* xb;
  const T* rb;
  T* yb;
  int64_t rows;
  const float* mean;  // (C,) of the sample
  const float* a;     // (C,) rstd * w
  const float* b;     // (C,) bias
  bool nt;            // streaming stores
  void run(const Group& gr) {
    V mv[kMaxSlots], av[kMaxSlots], bv[kMaxSlots];
    expand(gr, mean, mv);
    expand(gr, a, av);
    expand(gr, b, bv);
    walk(gr, rows, [&](int v, int64_t off, Mask m) {
      V y = fma(load(xb + off, m) - mv[v], av[v], bv[v]);
      if (RES) y = y + load(rb + off, m);
      if (RELU) y = relu(y);
      put(yb + off, y, m, nt);
    });
  }
  void run_wide(const ClPlan& q) {
    walk_wide(q, rows, [&](int64_t c, int64_t off, Mask m) {
      V y = fma(load(xb + off, m) - load(mean + c, m), load(a + c, m), load(b + c, m));
      if (RES) y = y + load(rb + off, m);
      if (RELU) y = relu(y);
      put(yb + off, y, m, nt);
    });
  }
};

// Sample groups: consecutive samples whose `tensors` inputs fit in about kGroupBytes.
template <typename T>
int64_t samples_per_group(int64_t N, int64_t C, int64_t S, int tensors) {
  const int64_t bytes = std::max<int64_t>(1, S * C * static_cast<int64_t>(sizeof(T)) * tensors);
  return std::clamp<int64_t>(kGroupBytes / bytes, 1, N);
}

template <typename T, bool RES, bool RELU>
void fwd_cl(const T* X,       // (N, S, C) input
            const T* R,       // (N, S, C) residual or null
            T* Y,             // (N, S, C) output
            const float* W,   // (C,) or null
            const float* B,   // (C,) or null
            float* Mean,      // (N, C) written when stats, else read
            float* Rstd,      // (N, C)
            float* Var,       // (N, C)
            uint8_t* Flag,    // (N, C)
            int64_t N, int64_t C, int64_t S, bool stats, float eps, bool stream, int nt) {
  const ClPlan q = cl_plan(C, S);
  const int64_t nb = q.nb;
  const int64_t gs = samples_per_group<T>(N, C, S, RES ? 2 : 1);
  std::vector<float> bmean(stats ? gs * nb * C : 0), bm2(stats ? gs * nb * C : 0);
  std::vector<float> A(N * C), Bv(N * C), shift(stats ? N * C : 0);
  for (int64_t n = 0; n < (stats ? N : 0); ++n)
    for (int64_t c = 0; c < C; ++c) shift[n * C + c] = ld(X + n * S * C + c);  // row 0 of each sample
  int flagged = 0;
#pragma omp parallel num_threads(nt)
  {
    for (int64_t n0 = 0; n0 < N; n0 += gs) {
      const int64_t n1 = std::min(N, n0 + gs);
      if (stats) {
#pragma omp for schedule(static)
        for (int64_t u = 0; u < (n1 - n0) * nb; ++u) {
          const int64_t n = n0 + u / nb, r0 = u % nb * q.rows;
          BlockStats<T> body{X + (n * S + r0) * C, std::min(q.rows, S - r0), shift.data() + n * C,
                             bmean.data() + u * C, bm2.data() + u * C};
          for_groups(q, body);
        }
        // merge the blocks of each sample in block order (Chan), vectorized over C
#pragma omp for schedule(static)
        for (int64_t n = n0; n < n1; ++n) {
          std::vector<double> mean(C, 0.0), m2(C, 0.0);
          double count = 0;
          for (int64_t blk = 0; blk < nb; ++blk) {
            const double len = static_cast<double>(std::min(S, (blk + 1) * q.rows) - blk * q.rows);
            const double total = count + len, ratio = len / total, weight = count * len / total;
            const float* s = bmean.data() + ((n - n0) * nb + blk) * C;
            const float* m = bm2.data() + ((n - n0) * nb + blk) * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) {
              const double delta = s[c] - mean[c];
              mean[c] += delta * ratio;
              m2[c] += m[c] + delta * delta * weight;
            }
            count = total;
          }
          const T* x0 = X + n * S * C;
          for (int64_t c = 0; c < C; ++c) {
            const int64_t p = n * C + c;
            Mean[p] = static_cast<float>(ld(x0 + c) + mean[c]);
            Var[p] = static_cast<float>(m2[c] / static_cast<double>(S));
            Rstd[p] = inv_std(Var[p], eps);
            Flag[p] = unreliable(Mean[p], Var[p], eps) && all_finite(x0 + c, S, C);
            if (Flag[p]) {
#pragma omp atomic write
              flagged = 1;
            }
          }
        }
        int any;
#pragma omp atomic read
        any = flagged;
        if (any) break;  // Python redoes the statistics with scaled planes, then the output
      }
#pragma omp for schedule(static)
      for (int64_t p = n0 * C; p < n1 * C; ++p) {
        A[p] = W ? Rstd[p] * W[p % C] : Rstd[p];
        Bv[p] = B ? B[p % C] : 0.f;
      }
      // no barrier after the apply: the next group's statistics touch other memory
#pragma omp for schedule(static) nowait
      for (int64_t u = 0; u < (n1 - n0) * nb; ++u) {
        const int64_t n = n0 + u / nb, r0 = u % nb * q.rows;
        const int64_t off = (n * S + r0) * C;
        BlockApply<T, RES, RELU> body{X + off,      RES ? R + off : nullptr, Y + off,           std::min(q.rows, S - r0),
                                      Mean + n * C, A.data() + n * C,        Bv.data() + n * C, stream};
        for_groups(q, body);
      }
    }
    if (stream) stream_fence();
  }
}

// Backward block sums per channel: sum(g), sum(g * (x - mean)).
template <typename T, bool RELU>
struct BlockGradSums {
  const T *dyb, *xb, *yb;
  int64_t rows;
  const float* mean;  // (C,) of the sample
  float* sg;          // (C,) out
  float* sgx;         // (C,) out
  void run(const Group& gr) {
    V mv[kMaxSlots], ag[kMaxSlots], ax[kMaxSlots];
    expand(gr, mean, mv);
    INSTYLE_FOR_SLOTS(v, gr.nv) ag[v] = ax[v] = vzero();
    walk(gr, rows, [&](int v, int64_t off, Mask m) {
      V g = load(dyb + off, m);
      if (RELU) g = maskz(positive(load(yb + off, m)), g);
      ag[v] = ag[v] + g;
      ax[v] = fma(g, maskz(m, load(xb + off, m) - mv[v]), ax[v]);
    });
    fold(gr, ag, sg);
    fold(gr, ax, sgx);
  }
  void run_wide(const ClPlan& q) {
    std::fill(sg, sg + q.C, 0.f);
    std::fill(sgx, sgx + q.C, 0.f);
    walk_wide(q, rows, [&](int64_t c, int64_t off, Mask m) {
      V g = load(dyb + off, m);
      if (RELU) g = maskz(positive(load(yb + off, m)), g);
      store(sg + c, load(sg + c, m) + g, m);
      store(sgx + c, fma(g, maskz(m, load(xb + off, m) - load(mean + c, m)), load(sgx + c, m)), m);
    });
  }
};

// dx = k1 * g + k2 * xhat + k3, dres = g over a block
template <typename T, bool RELU, bool DRES>
struct BlockGrad {
  const T *dyb, *xb, *yb;
  T *dxb, *drb;
  int64_t rows;
  const float *mean, *rstd, *k1, *k2, *k3;  // (C,) of the sample
  bool nt;
  void run(const Group& gr) {
    V mv[kMaxSlots], rv[kMaxSlots], k1v[kMaxSlots], k2v[kMaxSlots], k3v[kMaxSlots];
    expand(gr, mean, mv);
    expand(gr, rstd, rv);
    expand(gr, k1, k1v);
    expand(gr, k2, k2v);
    expand(gr, k3, k3v);
    walk(gr, rows, [&](int v, int64_t off, Mask m) {
      V g = load(dyb + off, m);
      if (RELU) g = maskz(positive(load(yb + off, m)), g);
      const V xhat = (load(xb + off, m) - mv[v]) * rv[v];
      put(dxb + off, fma(k1v[v], g, fma(k2v[v], xhat, k3v[v])), m, nt);
      if (DRES) put(drb + off, g, m, nt);
    });
  }
  void run_wide(const ClPlan& q) {
    walk_wide(q, rows, [&](int64_t c, int64_t off, Mask m) {
      V g = load(dyb + off, m);
      if (RELU) g = maskz(positive(load(yb + off, m)), g);
      const V xhat = (load(xb + off, m) - load(mean + c, m)) * load(rstd + c, m);
      put(dxb + off, fma(load(k1 + c, m), g, fma(load(k2 + c, m), xhat, load(k3 + c, m))), m, nt);
      if (DRES) put(drb + off, g, m, nt);
    });
  }
};

template <typename T, bool RELU, bool DRES>
void bwd_cl(const T* DY, const T* X, const T* Y, const float* Mean, const float* Rstd, const float* W, T* DX, T* DR,
            double* Sg, double* Sgx, int64_t N, int64_t C, int64_t S, bool stats, bool stream, int nt) {
  const ClPlan q = cl_plan(C, S);
  const int64_t nb = q.nb;
  const int64_t gs = samples_per_group<T>(N, C, S, RELU ? 3 : 2);
  std::vector<float> bg(gs * nb * C), bgx(gs * nb * C);
  std::vector<float> K1(N * C), K2(N * C), K3(N * C);
  const float inv_s = 1.0f / static_cast<float>(S);
#pragma omp parallel num_threads(nt)
  {
    for (int64_t n0 = 0; n0 < N; n0 += gs) {
      const int64_t n1 = std::min(N, n0 + gs);
#pragma omp for schedule(static)
      for (int64_t u = 0; u < (n1 - n0) * nb; ++u) {
        const int64_t n = n0 + u / nb, r0 = u % nb * q.rows;
        const int64_t off = (n * S + r0) * C;
        BlockGradSums<T, RELU> body{DY + off,     X + off,          RELU ? Y + off : nullptr,
                                    std::min(q.rows, S - r0), Mean + n * C, bg.data() + u * C,
                                    bgx.data() + u * C};
        for_groups(q, body);
      }
#pragma omp for schedule(static)
      for (int64_t n = n0; n < n1; ++n) {
        std::vector<double> sg(C, 0.0), sgx(C, 0.0);
        for (int64_t blk = 0; blk < nb; ++blk) {
          const float* a = bg.data() + ((n - n0) * nb + blk) * C;
          const float* b = bgx.data() + ((n - n0) * nb + blk) * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            sg[c] += a[c];
            sgx[c] += b[c];
          }
        }
        for (int64_t c = 0; c < C; ++c) {
          const int64_t p = n * C + c;
          const float rstd = Rstd[p];
          Sg[p] = sg[c];
          Sgx[p] = sgx[c] * rstd;
          K1[p] = W ? rstd * W[c] : rstd;
          K2[p] = stats ? -K1[p] * static_cast<float>(Sgx[p]) * inv_s : 0.f;  // times xhat
          K3[p] = stats ? -K1[p] * static_cast<float>(sg[c]) * inv_s : 0.f;
        }
      }
      // no barrier after the apply: the next group's sums touch other memory
#pragma omp for schedule(static) nowait
      for (int64_t u = 0; u < (n1 - n0) * nb; ++u) {
        const int64_t n = n0 + u / nb, r0 = u % nb * q.rows;
        const int64_t off = (n * S + r0) * C;
        BlockGrad<T, RELU, DRES> body{DY + off,          X + off,           RELU ? Y + off : nullptr,
                                      DX + off,          DRES ? DR + off : nullptr,
                                      std::min(q.rows, S - r0),
                                      Mean + n * C,      Rstd + n * C,      K1.data() + n * C,
                                      K2.data() + n * C, K3.data() + n * C, stream};
        for_groups(q, body);
      }
    }
    if (stream) stream_fence();
  }
}

// ================================================================ dispatch
// Distance in elements between the starts of the runs of full vectors (see stream_ok).
inline int64_t vector_period(int cl, int64_t C, int64_t S) { return cl ? (cl_plan(C, S).period ? S * C : C) : S; }

template <typename T>
int fwd_t(int cl, const void* x, const void* r, void* y, const float* w, const float* b, float* mean, float* rstd,
          float* var, uint8_t* flag, int64_t N, int64_t C, int64_t S, int stats, float eps, int relu, int nt) {
  auto X = static_cast<const T*>(x);
  auto R = static_cast<const T*>(r);
  auto Y = static_cast<T*>(y);
  const bool stream = stream_ok<T>(y, N * C * S, vector_period(cl, C, S));
#define INSTYLE_FWD(RES, RELU_)                                                                       \
  (cl ? fwd_cl<T, RES, RELU_>(X, R, Y, w, b, mean, rstd, var, flag, N, C, S, stats, eps, stream, nt) \
      : fwd_planar<T, RES, RELU_>(X, R, Y, w, b, mean, rstd, var, flag, N, C, S, stats, eps, stream, nt))
  if (r) {
    if (relu) INSTYLE_FWD(true, true); else INSTYLE_FWD(true, false);
  } else {
    if (relu) INSTYLE_FWD(false, true); else INSTYLE_FWD(false, false);
  }
#undef INSTYLE_FWD
  int flagged = 0;
  if (stats)
    for (int64_t p = 0; p < N * C; ++p) flagged += flag[p];
  return flagged;
}

template <typename T>
void bwd_t(int cl, const void* dy, const void* x, const void* y, const float* mean, const float* rstd, const float* w,
           void* dx, void* dr, double* sg, double* sgx, int64_t N, int64_t C, int64_t S, int stats, int relu, int nt) {
  auto DY = static_cast<const T*>(dy);
  auto X = static_cast<const T*>(x);
  auto Y = static_cast<const T*>(y);
  auto DX = static_cast<T*>(dx);
  auto DR = static_cast<T*>(dr);
  const bool stream = (!dr || reinterpret_cast<uintptr_t>(dr) % 64 == 0) &&
                      stream_ok<T>(dx, N * C * S, vector_period(cl, C, S));
#define INSTYLE_BWD(RELU_, DRES)                                                                     \
  (cl ? bwd_cl<T, RELU_, DRES>(DY, X, Y, mean, rstd, w, DX, DR, sg, sgx, N, C, S, stats, stream, nt) \
      : bwd_planar<T, RELU_, DRES>(DY, X, Y, mean, rstd, w, DX, DR, sg, sgx, N, C, S, stats, stream, nt))
  if (relu) {
    if (dr) INSTYLE_BWD(true, true); else INSTYLE_BWD(true, false);
  } else {
    INSTYLE_BWD(false, false);
  }
#undef INSTYLE_BWD
}

}  // namespace

extern "C" {

int instyle_abi_version() { return 2; }

// Forward. stats=1: computes Mean/Rstd/Var (N*C fp32) and y; planes whose fp32 statistics are
// unreliable on finite input (see `unreliable`) are flagged and get no output; returns their count.
// stats=0: Mean/Rstd are given (N*C), only y is written. r, w, b may be null.
int instyle_instance_norm_fwd(int dtype, int cl, const void* x, const void* r, void* y, const float* w,
                              const float* b, float* mean, float* rstd, float* var, int64_t N, int64_t C,
                              int64_t S, int stats, float eps, int relu, int nt) {
  std::vector<uint8_t> flag(N * C);  // 1 = the plane is redone with scaled values
  uint8_t* f = flag.data();
  switch (dtype) {
    case kF32: return fwd_t<float>(cl, x, r, y, w, b, mean, rstd, var, f, N, C, S, stats, eps, relu, nt);
    case kBF16: return fwd_t<bf16>(cl, x, r, y, w, b, mean, rstd, var, f, N, C, S, stats, eps, relu, nt);
    case kF16: return fwd_t<f16>(cl, x, r, y, w, b, mean, rstd, var, f, N, C, S, stats, eps, relu, nt);
  }
  return -1;
}

// Backward. y is read only with relu (mask y > 0); dr (= masked dy) only written when
// non-null and relu. dw, db: (C,) sum over the samples of sum(g * xhat) and sum(g), each plane's in
// double, the samples added in order 0..N-1, then rounded to float once. Statistics scaled by a
// power of two (any exponent != 0) are not the kernels' units: returns 1 and writes nothing, and
// the caller takes its torch path; else returns 0.
int instyle_instance_norm_bwd(int dtype, int cl, const void* dy, const void* x, const void* y, const float* mean,
                              const float* rstd, const int32_t* exponent, const float* w, void* dx, void* dr,
                              float* dw, float* db, int64_t N, int64_t C, int64_t S, int stats, int relu, int nt) {
  for (int64_t p = 0; p < N * C; ++p)
    if (exponent[p] != 0) return 1;
  std::vector<double> sg(N * C), sgx(N * C);
  switch (dtype) {
    case kF32: bwd_t<float>(cl, dy, x, y, mean, rstd, w, dx, dr, sg.data(), sgx.data(), N, C, S, stats, relu, nt); break;
    case kBF16: bwd_t<bf16>(cl, dy, x, y, mean, rstd, w, dx, dr, sg.data(), sgx.data(), N, C, S, stats, relu, nt); break;
    case kF16: bwd_t<f16>(cl, dy, x, y, mean, rstd, w, dx, dr, sg.data(), sgx.data(), N, C, S, stats, relu, nt); break;
  }
  for (int64_t c = 0; c < C; ++c) {
    double g = 0, gx = 0;
    for (int64_t n = 0; n < N; ++n) {
      g += sg[n * C + c];
      gx += sgx[n * C + c];
    }
    db[c] = static_cast<float>(g);
    dw[c] = static_cast<float>(gx);
  }
  return 0;
}

}  // extern "C"
