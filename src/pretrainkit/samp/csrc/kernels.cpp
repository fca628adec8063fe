// See kernels.h. Written for GCC/Clang auto-vectorization: branch-free inner loops marked
// `omp simd` (-fopenmp-simd), the branches that depend on arguments hoisted into templates.
// Reductions (sums, maxima) carry no `omp simd reduction` clause: GCC lowers that clause to an
// accumulator array on the stack, a store and reload every iteration; with -fassociative-math
// it vectorizes the plain loop with register accumulators (softmax 88 -> 70-80 us a layer).
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

// exp(x) for x <= 0 (softmax after subtracting the row maximum): 2^n * e^r with
// n = round(x / ln 2), |r| <= ln2 / 2, e^r by its degree-6 Taylor polynomial (relative error
// < 3e-7, far below the bf16 rounding of the probabilities); x is clamped at -87 so 2^n stays
// a normal float. libm's expf does not vectorize without glibc's vector library, which we do
// not rely on.
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.0f);
  const float n = __builtin_rintf(x * 1.44269504088896341f);
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;  // ln 2, split
  float p = 1.f / 720.f;
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

// erf by Abramowitz & Stegun 7.1.28: 1 - (1 + a1 x + ... + a6 x^6)^-16 for x >= 0 (absolute
// error <= 3e-7; ~1.6e-6 in fp32, far below the bf16/INT8 rounding that follows). No exp and
// one division: about half the instructions of 7.1.26. |x| is clamped at 6 (erf(6) = 1 in fp32)
// so the 16th power stays finite.
inline float erf_approx(float x) {
  const float a = std::min(std::fabs(x), 6.f);
  float p = 0.0000430638f;
  p = p * a + 0.0002765672f;
  p = p * a + 0.0001520143f;
  p = p * a + 0.0092705272f;
  p = p * a + 0.0422820123f;
  p = p * a + 0.0705230784f;
  p = p * a + 1.f;
  p = p * p;
  p = p * p;
  p = p * p;
  p = p * p;
  return std::copysign(1.f - 1.f / p, x);
}

template <typename T>
void quantize_rows(const T* x, int64_t t, int64_t k, int64_t ld, int8_t* q, float* s) {
  for (int64_t i = 0; i < t; i++) {
    const T* row = x + i * ld;
    float amax = 0.f;
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
    for (int64_t j = 0; j < n; j++) {
      float x = static_cast<float>(acc[j]) * (ws[j] * xs);
      if (Bias) x += bias[j];
      if (Res) x += res[j];
      v[j] = x;
      sum += x;
    }
    const float mean = sum * inv_n;
    float sq = 0.f;
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
    // (the maximum as a ternary from a finite start, not std::max from -inf: that form stayed
    // scalar under these flags)
    float mx = -3e38f;
    if (keep) {
      for (int64_t j = 0; j < c; j++) {
        buf[j] = keep[j] ? bf16_to_f32(row[j]) : masked;
        mx = mx > buf[j] ? mx : buf[j];
      }
    } else {
      for (int64_t j = 0; j < c; j++) {
        buf[j] = bf16_to_f32(row[j]);
        mx = mx > buf[j] ? mx : buf[j];
      }
    }
    float sum = 0.f;
    for (int64_t j = 0; j < c; j++) {
      buf[j] = exp_nonpositive(buf[j] - mx);
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
