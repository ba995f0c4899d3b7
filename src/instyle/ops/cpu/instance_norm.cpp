// CPU instance-norm kernels: forward (statistics + fused affine/residual/ReLU) and the
// analytic backward, for float32, bfloat16 and float16 tensors in two layouts:
//   planar:        (N, C, S) contiguous, S = prod(spatial)   (NCHW, NCDHW, NCL)
//   channels-last: (N, S, C) contiguous                      (NHWC, NDHWC)
// Plain C++ without torch headers (it builds in about a second); instance_norm.py loads it
// with ctypes and passes raw pointers. Statistics are fp32: every chunk of a plane gets a
// two-pass mean/M2 shifted by the plane's first element, chunks are merged with Chan's
// formula in double. No E[x^2] - E[x]^2 anywhere.
// Determinism: chunk and block boundaries depend only on the shape, each chunk is reduced
// by one thread and chunks are merged in a fixed order, so the bits do not depend on the
// thread count or the schedule.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#include <algorithm>
#include <type_traits>

namespace {

constexpr int64_t kChunk = 2048;        // planar: elements per two-pass chunk (8 KB fp32, in L1)
constexpr int64_t kBlockElems = 8192;   // channels-last: rows * C per block

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

// Conversions are branch-free bit arithmetic so that the loops vectorize (GCC 12 does not
// vectorize _Float16 conversions without AVX512-FP16). Both round to nearest even.
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

// Sum of f(i) for i < len in kLanes independent fp32 accumulators (several vector registers,
// so the adds pipeline), folded in a fixed tree order: deterministic, and no -ffast-math.
constexpr int kLanes = 64;
template <class F>
inline float lane_sum(int64_t len, F f) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) acc[j] += f(i + j);
  }
  float tail = 0.f;
  for (; i < len; ++i) tail += f(i);
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0] + tail;
}

// Two sums in one pass: f(i) returns both terms (backward: sum(g) and sum(g * (x - mean))).
struct Pair {
  float a, b;
};
template <class F>
inline Pair lane_sum2(int64_t len, F f) {
  float acc_a[kLanes] = {}, acc_b[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) {
      const Pair t = f(i + j);
      acc_a[j] += t.a;
      acc_b[j] += t.b;
    }
  }
  float tail_a = 0.f, tail_b = 0.f;
  for (; i < len; ++i) {
    const Pair t = f(i);
    tail_a += t.a;
    tail_b += t.b;
  }
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) {
      acc_a[j] += acc_a[j + w];
      acc_b[j] += acc_b[j + w];
    }
  return {acc_a[0] + tail_a, acc_b[0] + tail_b};
}

// rsqrt(var + eps), 0 where that is inf (eps == 0 on a constant plane), as the reference.
inline float inv_std(float var, float eps) {
  float r = 1.0f / std::sqrt(var + eps);
  return std::isinf(r) ? 0.0f : r;
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

// ---------------------------------------------------------------- planar forward
template <typename T, bool RES, bool RELU>
void fwd_planar(const T* X, const T* R, T* Y, const float* W, const float* B, float* Mean, float* Rstd,
                float* Var, uint8_t* Flag, int64_t N, int64_t C, int64_t S, bool stats, float eps, int nt) {
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t p = 0; p < N * C; ++p) {
    const T* x = X + p * S;
    const int64_t c = p % C;
    float mean, rstd;
    if (stats) {
      const float k = ld(x);  // shift: the plane's first element
      Moments m;
      for (int64_t c0 = 0; c0 < S; c0 += kChunk) {
        const int64_t len = std::min(kChunk, S - c0);
        const T* xc = x + c0;
        const float mb = lane_sum(len, [&](int64_t i) { return ld(xc + i) - k; }) / static_cast<float>(len);
        const float q = lane_sum(len, [&](int64_t i) {
          const float d = (ld(xc + i) - k) - mb;
          return d * d;
        });
        m.merge(static_cast<double>(len), mb, q);
      }
      mean = static_cast<float>(k + m.mean);
      const float var = static_cast<float>(m.m2 / static_cast<double>(S));
      Flag[p] = 0;
      if (!std::isfinite(mean) || !std::isfinite(var)) {
        // finite input whose statistics overflow fp32: Python redoes it with scaled planes
        if (all_finite(x, S, 1)) {
          Flag[p] = 1;
          continue;
        }
      }
      rstd = inv_std(var, eps);
      Mean[p] = mean;
      Rstd[p] = rstd;
      Var[p] = var;
    } else {
      mean = Mean[p];
      rstd = Rstd[p];
    }
    const float a = W ? rstd * W[c] : rstd;
    const float b = B ? B[c] : 0.f;
    T* y = Y + p * S;
    const T* r = RES ? R + p * S : nullptr;
#pragma omp simd
    for (int64_t i = 0; i < S; ++i) {
      float v = (ld(x + i) - mean) * a + b;
      if (RES) v += ld(r + i);
      if (RELU) v = v < 0.f ? 0.f : v;
      st(y + i, v);
    }
  }
}

// ---------------------------------------------------------------- channels-last forward
// dst[c] = val(c) for a row of C elements. float16 goes through the fp32 buffer `tmp` and a
// separate conversion loop: GCC 12 does not vectorize a loop that reads float arrays and
// converts to float16 in one go (it does for bfloat16 and float32).
template <typename T, class F>
inline void store_row(T* dst, int64_t C, float* tmp, F val) {
  if constexpr (std::is_same_v<T, f16>) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) tmp[c] = val(c);
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) st(dst + c, tmp[c]);
  } else {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) st(dst + c, val(c));
  }
}

inline int64_t block_rows(int64_t C, int64_t S) { return std::max<int64_t>(1, std::min(S, kBlockElems / C)); }

template <typename T, bool RES, bool RELU>
void fwd_cl(const T* X, const T* R, T* Y, const float* W, const float* B, float* Mean, float* Rstd, float* Var,
            uint8_t* Flag, int64_t N, int64_t C, int64_t S, bool stats, float eps, int nt) {
  const int64_t rows = block_rows(C, S);
  const int64_t nb = (S + rows - 1) / rows;
  if (stats) {
    // per (n, block, c) shifted sums then M2, two passes over an L1/L2-sized block
    std::vector<float> psum(N * nb * C), pm2(N * nb * C);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t nbi = 0; nbi < N * nb; ++nbi) {
      const int64_t n = nbi / nb, blk = nbi % nb;
      const int64_t r0 = blk * rows, r1 = std::min(S, r0 + rows);
      const T* x0 = X + n * S * C;  // row 0 of sample n: the shift
      float* s = psum.data() + nbi * C;
      float* q = pm2.data() + nbi * C;
      std::fill(s, s + C, 0.f);
      std::fill(q, q + C, 0.f);
      for (int64_t r = r0; r < r1; ++r) {
        const T* xr = x0 + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) s[c] += ld(xr + c) - ld(x0 + c);
      }
      const float inv = 1.0f / static_cast<float>(r1 - r0);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) s[c] *= inv;  // now the block mean (shifted)
      for (int64_t r = r0; r < r1; ++r) {
        const T* xr = x0 + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          float d = (ld(xr + c) - ld(x0 + c)) - s[c];
          q[c] += d * d;
        }
      }
    }
    // merge the blocks of each sample in block order (Chan), vectorized over C
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t n = 0; n < N; ++n) {
      std::vector<double> mean(C, 0.0), m2(C, 0.0);
      double count = 0;
      for (int64_t blk = 0; blk < nb; ++blk) {
        const double len = static_cast<double>(std::min(S, (blk + 1) * rows) - blk * rows);
        const double total = count + len, ratio = len / total, weight = count * len / total;
        const float* s = psum.data() + (n * nb + blk) * C;
        const float* q = pm2.data() + (n * nb + blk) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const double delta = s[c] - mean[c];
          mean[c] += delta * ratio;
          m2[c] += q[c] + delta * delta * weight;
        }
        count = total;
      }
      const T* x0 = X + n * S * C;
      for (int64_t c = 0; c < C; ++c) {
        const int64_t p = n * C + c;
        Mean[p] = static_cast<float>(ld(x0 + c) + mean[c]);
        Var[p] = static_cast<float>(m2[c] / static_cast<double>(S));
        Rstd[p] = inv_std(Var[p], eps);
        Flag[p] = (!std::isfinite(Mean[p]) || !std::isfinite(Var[p])) && all_finite(x0 + c, S, C);
      }
    }
    for (int64_t p = 0; p < N * C; ++p)
      if (Flag[p]) return;  // Python redoes the statistics with scaled planes
  }
  // apply: y = (x - mean) * (rstd * w) + b (+ r), relu; vectorized over C
  std::vector<float> A(N * C), Bv(N * C);
  for (int64_t p = 0; p < N * C; ++p) {
    const int64_t c = p % C;
    A[p] = W ? Rstd[p] * W[c] : Rstd[p];
    Bv[p] = B ? B[c] : 0.f;
  }
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t nbi = 0; nbi < N * nb; ++nbi) {
    const int64_t n = nbi / nb, blk = nbi % nb;
    const int64_t r0 = blk * rows, r1 = std::min(S, r0 + rows);
    const float* mean = Mean + n * C;
    const float* a = A.data() + n * C;
    const float* b = Bv.data() + n * C;
    std::vector<float> tmp(C);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t off = (n * S + r) * C;
      const T* xr = X + off;
      const T* rr = RES ? R + off : nullptr;
      store_row(Y + off, C, tmp.data(), [&](int64_t c) {
        float v = (ld(xr + c) - mean[c]) * a[c] + b[c];
        if (RES) v += ld(rr + c);
        if (RELU) v = v < 0.f ? 0.f : v;
        return v;
      });
    }
  }
}

// ---------------------------------------------------------------- planar backward
// g = dy * [y > 0]; xhat = (x - mean) * rstd (formed first: rstd^2 underflows for |x| ~ 1e25)
// dx = rstd * w * (g - sum(g)/S - xhat * sum(g * xhat)/S)     (input statistics)
// dx = rstd * w * g                                           (running statistics)
// dw = sum_n sum(g * xhat); db = sum_n sum(g); dres = g
template <typename T, bool RELU, bool DRES>
void bwd_planar(const T* DY, const T* X, const T* Y, const float* Mean, const float* Rstd, const float* W, T* DX,
                T* DR, double* Sg, double* Sgx, int64_t N, int64_t C, int64_t S, bool stats, int nt) {
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t p = 0; p < N * C; ++p) {
    const T* dy = DY + p * S;
    const T* x = X + p * S;
    const T* y = RELU ? Y + p * S : nullptr;
    const float mean = Mean[p], rstd = Rstd[p];
    double sg = 0, sgx = 0;
    for (int64_t c0 = 0; c0 < S; c0 += kChunk) {
      const int64_t len = std::min(kChunk, S - c0);
      auto grad = [&](int64_t i) { return RELU ? (ld(y + c0 + i) > 0.f ? ld(dy + c0 + i) : 0.f) : ld(dy + c0 + i); };
      const Pair sums = lane_sum2(len, [&](int64_t i) {
        const float g = grad(i);
        return Pair{g, g * (ld(x + c0 + i) - mean)};
      });
      sg += sums.a;
      sgx += sums.b;
    }
    Sg[p] = sg;
    Sgx[p] = sgx * rstd;  // sum(g * xhat)
    const float w = W ? W[p % C] : 1.f;
    const float k1 = rstd * w;
    const float inv_s = 1.0f / static_cast<float>(S);
    const float k2 = stats ? -k1 * static_cast<float>(Sgx[p]) * inv_s : 0.f;  // times xhat
    const float k3 = stats ? -k1 * static_cast<float>(sg) * inv_s : 0.f;
    T* dx = DX + p * S;
    T* dr = DRES ? DR + p * S : nullptr;
#pragma omp simd
    for (int64_t i = 0; i < S; ++i) {
      float g = ld(dy + i);
      if (RELU) g = ld(y + i) > 0.f ? g : 0.f;
      st(dx + i, k1 * g + k2 * ((ld(x + i) - mean) * rstd) + k3);
      if (DRES) st(dr + i, g);
    }
  }
}

// ---------------------------------------------------------------- channels-last backward
template <typename T, bool RELU, bool DRES>
void bwd_cl(const T* DY, const T* X, const T* Y, const float* Mean, const float* Rstd, const float* W, T* DX, T* DR,
            double* Sg, double* Sgx, int64_t N, int64_t C, int64_t S, bool stats, int nt) {
  const int64_t rows = block_rows(C, S);
  const int64_t nb = (S + rows - 1) / rows;
  std::vector<float> pg(N * nb * C), pgx(N * nb * C);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t nbi = 0; nbi < N * nb; ++nbi) {
    const int64_t n = nbi / nb, blk = nbi % nb;
    const int64_t r0 = blk * rows, r1 = std::min(S, r0 + rows);
    const float* mean = Mean + n * C;
    float* a = pg.data() + nbi * C;
    float* b = pgx.data() + nbi * C;
    std::fill(a, a + C, 0.f);
    std::fill(b, b + C, 0.f);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t off = (n * S + r) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        float g = ld(DY + off + c);
        if (RELU) g = ld(Y + off + c) > 0.f ? g : 0.f;
        a[c] += g;
        b[c] += g * (ld(X + off + c) - mean[c]);
      }
    }
  }
  std::vector<float> K1(N * C), K2(N * C), K3(N * C);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t n = 0; n < N; ++n) {
    std::vector<double> sg(C, 0.0), sgx(C, 0.0);
    for (int64_t blk = 0; blk < nb; ++blk) {
      const float* a = pg.data() + (n * nb + blk) * C;
      const float* b = pgx.data() + (n * nb + blk) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        sg[c] += a[c];
        sgx[c] += b[c];
      }
    }
    const float inv_s = 1.0f / static_cast<float>(S);
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
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t nbi = 0; nbi < N * nb; ++nbi) {
    const int64_t n = nbi / nb, blk = nbi % nb;
    const int64_t r0 = blk * rows, r1 = std::min(S, r0 + rows);
    const float* mean = Mean + n * C;
    const float* k1 = K1.data() + n * C;
    const float* k2 = K2.data() + n * C;
    const float* k3 = K3.data() + n * C;
    const float* rstd = Rstd + n * C;
    std::vector<float> tmp(C);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t off = (n * S + r) * C;
      auto grad = [&](int64_t c) { return RELU ? (ld(Y + off + c) > 0.f ? ld(DY + off + c) : 0.f) : ld(DY + off + c); };
      store_row(DX + off, C, tmp.data(),
                [&](int64_t c) { return k1[c] * grad(c) + k2[c] * ((ld(X + off + c) - mean[c]) * rstd[c]) + k3[c]; });
      if (DRES) store_row(DR + off, C, tmp.data(), grad);
    }
  }
}

template <typename T>
int fwd_t(int cl, const void* x, const void* r, void* y, const float* w, const float* b, float* mean, float* rstd,
          float* var, uint8_t* flag, int64_t N, int64_t C, int64_t S, int stats, float eps, int relu, int nt) {
  auto X = static_cast<const T*>(x);
  auto R = static_cast<const T*>(r);
  auto Y = static_cast<T*>(y);
#define INSTYLE_FWD(RES, RELU_)                                                                          \
  (cl ? fwd_cl<T, RES, RELU_>(X, R, Y, w, b, mean, rstd, var, flag, N, C, S, stats, eps, nt)            \
      : fwd_planar<T, RES, RELU_>(X, R, Y, w, b, mean, rstd, var, flag, N, C, S, stats, eps, nt))
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
#define INSTYLE_BWD(RELU_, DRES)                                                                      \
  (cl ? bwd_cl<T, RELU_, DRES>(DY, X, Y, mean, rstd, w, DX, DR, sg, sgx, N, C, S, stats, nt)         \
      : bwd_planar<T, RELU_, DRES>(DY, X, Y, mean, rstd, w, DX, DR, sg, sgx, N, C, S, stats, nt))
  if (relu) {
    if (dr) INSTYLE_BWD(true, true); else INSTYLE_BWD(true, false);
  } else {
    INSTYLE_BWD(false, false);
  }
#undef INSTYLE_BWD
}

}  // namespace

extern "C" {

int instyle_abi_version() { return 1; }

// Forward. stats=1: computes Mean/Rstd/Var (N*C fp32) and y; planes whose statistics
// overflow fp32 on finite input get Flag=1 and no output; returns their count.
// stats=0: Mean/Rstd are given (N*C), only y is written. r, w, b may be null.
int instyle_instance_norm_fwd(int dtype, int cl, const void* x, const void* r, void* y, const float* w,
                              const float* b, float* mean, float* rstd, float* var, uint8_t* flag, int64_t N,
                              int64_t C, int64_t S, int stats, float eps, int relu, int nt) {
  switch (dtype) {
    case kF32: return fwd_t<float>(cl, x, r, y, w, b, mean, rstd, var, flag, N, C, S, stats, eps, relu, nt);
    case kBF16: return fwd_t<bf16>(cl, x, r, y, w, b, mean, rstd, var, flag, N, C, S, stats, eps, relu, nt);
    case kF16: return fwd_t<f16>(cl, x, r, y, w, b, mean, rstd, var, flag, N, C, S, stats, eps, relu, nt);
  }
  return -1;
}

// Backward. y is read only with relu (mask y > 0); dr (= masked dy) only written when
// non-null and relu. sg, sgx: per-plane sum(g) and sum(g * xhat) (N*C doubles).
void instyle_instance_norm_bwd(int dtype, int cl, const void* dy, const void* x, const void* y, const float* mean,
                               const float* rstd, const float* w, void* dx, void* dr, double* sg, double* sgx,
                               int64_t N, int64_t C, int64_t S, int stats, int relu, int nt) {
  switch (dtype) {
    case kF32: bwd_t<float>(cl, dy, x, y, mean, rstd, w, dx, dr, sg, sgx, N, C, S, stats, relu, nt); break;
    case kBF16: bwd_t<bf16>(cl, dy, x, y, mean, rstd, w, dx, dr, sg, sgx, N, C, S, stats, relu, nt); break;
    case kF16: bwd_t<f16>(cl, dy, x, y, mean, rstd, w, dx, dr, sg, sgx, N, C, S, stats, relu, nt); break;
  }
}

}  // extern "C"
