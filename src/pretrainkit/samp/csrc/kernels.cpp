// See kernels.h. Written for GCC/Clang auto-vectorization: branch-free inner loops marked
// `omp simd` (-fopenmp-simd), the branches that depend on arguments hoisted into templates.
#include "kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace samp {
namespace {

inline float bf16_to_f32(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even (inputs are finite: NaN needs no special case here).
inline uint16_t f32_to_bf16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float load(const float* p) { return *p; }
inline float load(const uint16_t* p) { return bf16_to_f32(*p); }
inline void store(float* p, float v) { *p = v; }
inline void store(uint16_t* p, float v) { *p = f32_to_bf16(v); }

// exp(x) = 2^n * e^r with n = round(x / ln 2), |r| <= ln2 / 2, e^r by its degree-7 Taylor
// polynomial (relative error < 2e-7); x is clamped to [-87, 88] so 2^n stays a normal float.
// libm's expf does not vectorize without glibc's vector library, which we do not rely on.
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = __builtin_rintf(x * 1.44269504088896341f);
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;  // ln 2, split
  float p = 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

// erf by Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7).
inline float erf_approx(float x) {
  const float a = std::fabs(x);
  const float t = 1.f / (1.f + 0.3275911f * a);
  float y = 1.061405429f;
  y = y * t - 1.453152027f;
  y = y * t + 1.421413741f;
  y = y * t - 0.284496736f;
  y = y * t + 0.254829592f;
  y = 1.f - y * t * exp_approx(-a * a);
  return std::copysign(y, x);
}

template <typename T>
void quantize_rows(const T* x, int64_t t, int64_t k, int64_t ld, int8_t* q, float* s) {
  for (int64_t i = 0; i < t; i++) {
    const T* row = x + i * ld;
    float amax = 0.f;
#pragma omp simd reduction(max : amax)
    for (int64_t j = 0; j < k; j++) amax = std::max(amax, std::fabs(load(row + j)));
    amax = std::max(amax, 1e-8f);
    s[i] = amax / 127.f;
    const float inv = 127.f / amax;  // |x * inv| <= 127: no clamp needed
    int8_t* qrow = q + i * k;
#pragma omp simd
    for (int64_t j = 0; j < k; j++)
      qrow[j] = static_cast<int8_t>(static_cast<int32_t>(__builtin_rintf(load(row + j) * inv)));
  }
}

// The epilogues copy every pointer into a __restrict local first: Python extensions build
// with -fno-strict-aliasing, under which a float store could change a pointer read through
// `e`, and GCC then vectorized the loop with gathers (4x slower, seen in perf).
template <bool Bias, bool Gelu, bool Res, typename O>
void epilogue(const Epilogue& e, int64_t t, int64_t n, O* __restrict y) {
  const int32_t* __restrict acc_all = e.acc;
  const float* __restrict ws = e.wscale;
  const float* __restrict xscale = e.xscale;
  const float* __restrict bias = e.bias;
  const float* __restrict res_all = e.res;
  for (int64_t i = 0; i < t; i++) {
    const int32_t* __restrict acc = acc_all + i * n;
    const float xs = xscale[i];
    const float* __restrict res = Res ? res_all + i * n : nullptr;
    O* __restrict out = y + i * n;
#pragma omp simd
    for (int64_t j = 0; j < n; j++) {
      float v = static_cast<float>(acc[j]) * (ws[j] * xs);
      if (Bias) v += bias[j];
      if (Gelu) v = 0.5f * v * (1.f + erf_approx(v * 0.70710678118654752f));
      if (Res) v += res[j];
      store(out + j, v);
    }
  }
}

template <bool Bias, bool Res, typename O>
void epilogue_norm(const Epilogue& e, int64_t t, int64_t n, O* __restrict y) {
  const int32_t* __restrict acc_all = e.acc;
  const float* __restrict ws = e.wscale;
  const float* __restrict xscale = e.xscale;
  const float* __restrict bias = e.bias;
  const float* __restrict res_all = e.res;
  const float* __restrict gamma = e.gamma;
  const float* __restrict beta = e.beta;
  float* __restrict v = e.norm_buf;
  const float inv_n = 1.f / static_cast<float>(n);
  for (int64_t i = 0; i < t; i++) {
    const int32_t* __restrict acc = acc_all + i * n;
    const float xs = xscale[i];
    const float* __restrict res = Res ? res_all + i * n : nullptr;
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; j++) {
      float x = static_cast<float>(acc[j]) * (ws[j] * xs);
      if (Bias) x += bias[j];
      if (Res) x += res[j];
      v[j] = x;
      sum += x;
    }
    const float mean = sum * inv_n;
    float sq = 0.f;
#pragma omp simd reduction(+ : sq)
    for (int64_t j = 0; j < n; j++) sq += (v[j] - mean) * (v[j] - mean);
    const float rstd = 1.f / std::sqrt(sq * inv_n + e.eps);  // biased variance, as LayerNorm
    O* __restrict out = y + i * n;
#pragma omp simd
    for (int64_t j = 0; j < n; j++) store(out + j, (v[j] - mean) * rstd * gamma[j] + beta[j]);
  }
}

template <typename O>
void epilogue_any(const Epilogue& e, int64_t t, int64_t n, O* y) {
  const bool bias = e.bias != nullptr, res = e.res != nullptr;
  if (e.gamma) {
    if (bias && res) epilogue_norm<true, true>(e, t, n, y);
    else if (bias) epilogue_norm<true, false>(e, t, n, y);
    else if (res) epilogue_norm<false, true>(e, t, n, y);
    else epilogue_norm<false, false>(e, t, n, y);
    return;
  }
  if (bias && e.gelu && res) epilogue<true, true, true>(e, t, n, y);
  else if (bias && e.gelu) epilogue<true, true, false>(e, t, n, y);
  else if (bias && res) epilogue<true, false, true>(e, t, n, y);
  else if (bias) epilogue<true, false, false>(e, t, n, y);
  else if (e.gelu && res) epilogue<false, true, true>(e, t, n, y);
  else if (e.gelu) epilogue<false, true, false>(e, t, n, y);
  else if (res) epilogue<false, false, true>(e, t, n, y);
  else epilogue<false, false, false>(e, t, n, y);
}

}  // namespace

void quantize_rows_f32(const float* x, int64_t t, int64_t k, int64_t ld, int8_t* q, float* s) {
  quantize_rows(x, t, k, ld, q, s);
}
void quantize_rows_bf16(const uint16_t* x, int64_t t, int64_t k, int64_t ld, int8_t* q, float* s) {
  quantize_rows(x, t, k, ld, q, s);
}
void epilogue_f32(const Epilogue& e, int64_t t, int64_t n, float* y) { epilogue_any(e, t, n, y); }
void epilogue_bf16(const Epilogue& e, int64_t t, int64_t n, uint16_t* y) { epilogue_any(e, t, n, y); }

void softmax_rows_bf16(const uint16_t* in, int64_t rows, int64_t c, const uint8_t* keep,
                       uint16_t* out, float* buf) {
  // Masked keys get a large finite negative score (the build assumes no infinities), so they
  // neither win the maximum nor overflow; their probability is written as an exact 0.
  const float masked = -1e30f;
  for (int64_t r = 0; r < rows; r++) {
    const uint16_t* row = in + r * c;
    if (keep) {
#pragma omp simd
      for (int64_t j = 0; j < c; j++) buf[j] = keep[j] ? bf16_to_f32(row[j]) : masked;
    } else {
#pragma omp simd
      for (int64_t j = 0; j < c; j++) buf[j] = bf16_to_f32(row[j]);
    }
    // (a ternary, not std::max with -inf: that form stayed scalar under -ffast-math)
    float mx = -3e38f;
#pragma omp simd reduction(max : mx)
    for (int64_t j = 0; j < c; j++) mx = mx > buf[j] ? mx : buf[j];
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < c; j++) {
      buf[j] = exp_approx(buf[j] - mx);
      sum += buf[j];
    }
    const float inv = 1.f / sum;
    uint16_t* o = out + r * c;
    if (keep) {
#pragma omp simd
      for (int64_t j = 0; j < c; j++) o[j] = keep[j] ? f32_to_bf16(buf[j] * inv) : uint16_t{0};
    } else {
#pragma omp simd
      for (int64_t j = 0; j < c; j++) o[j] = f32_to_bf16(buf[j] * inv);
    }
  }
}

}  // namespace samp
