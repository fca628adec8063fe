// SAMP's fused CPU kernels: plain loops on raw pointers, no torch headers, so this file alone is
// compiled with -O3 -march=native -ffast-math and the compiler vectorizes every inner loop
// (checked with -fopt-info-vec). bindings.cpp wraps them for PyTorch.
#pragma once

#include <cstdint>

namespace samp {

// Symmetric INT8 per row: s[i] = max|x[i, :]| / 127, q[i, j] = round(x[i, j] / s[i]).
// x rows are `ld` elements apart; q is dense [t, k].
void quantize_rows_f32(const float* x, int64_t t, int64_t k, int64_t ld, int8_t* q, float* s);
void quantize_rows_bf16(const uint16_t* x, int64_t t, int64_t k, int64_t ld, int8_t* q, float* s);

// GEMM epilogue for t rows of n outputs:
//   v = act(acc * wscale[j] * xscale[i] + bias[j]) + res[i, j]
//   y = v, or LayerNorm(v) * gamma + beta over each row when gamma is set (a post-norm block:
//   the sub-layer's projection, its residual and the norm in one pass).
// bias, res, gamma/beta may be null; gelu is the exact (erf) GELU (not combined with a norm).
// res is fp32 [t, n]. norm_buf holds n floats (used with a norm only).
struct Epilogue {
  const int32_t* acc;
  const float* wscale;
  const float* xscale;
  const float* bias;
  const float* res;
  bool gelu;
  const float* gamma;
  const float* beta;
  float eps;
  float* norm_buf;
};
void epilogue_f32(const Epilogue& e, int64_t t, int64_t n, float* y);
void epilogue_bf16(const Epilogue& e, int64_t t, int64_t n, uint16_t* y);

// Softmax over rows of c bf16 scores computed in fp32, written as bf16. keep (may be null) is
// one byte per column (0 = masked key, probability exactly 0) shared by all rows; at least one
// key per row must be kept. buf holds c floats.
void softmax_rows_bf16(const uint16_t* in, int64_t rows, int64_t c, const uint8_t* keep,
                       uint16_t* out, float* buf);

}  // namespace samp
