// PyTorch entry points of SAMP's fused CPU kernels (kernels.h): argument checks, allocation,
// threading (at::parallel_for over rows) and the INT8 GEMM itself (at::_int_mm, oneDNN/VNNI).
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <vector>

#include "kernels.h"

namespace {

int64_t grain(int64_t row_elements) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, row_elements)); }

void check_vector(const c10::optional<torch::Tensor>& v, int64_t n, const char* name) {
  TORCH_CHECK(!v || (v->scalar_type() == at::kFloat && v->is_contiguous() && v->numel() == n),
              "int8_linear: ", name, " must be float32 [", n, "]");
}

// y = act(x W^T + b) (+ residual), then LayerNorm(y) * gamma + beta when gamma is given, with x
// quantized per row (token) and W per output channel.
// x: [..., k] fp32 or bf16; wt: int8 [k, n] (W transposed, contiguous); wscale: fp32 [n].
torch::Tensor int8_linear(const torch::Tensor& x, const torch::Tensor& wt, const torch::Tensor& wscale,
                          const c10::optional<torch::Tensor>& bias, bool gelu,
                          const c10::optional<torch::Tensor>& residual, bool out_bf16,
                          const c10::optional<torch::Tensor>& gamma,
                          const c10::optional<torch::Tensor>& beta, double eps) {
  TORCH_CHECK(x.device().is_cpu(), "int8_linear: x must be on the CPU");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "int8_linear: x must be float32 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK(wt.scalar_type() == at::kChar && wt.dim() == 2 && wt.is_contiguous(),
              "int8_linear: wt must be a contiguous int8 [in, out] matrix");
  const int64_t k = wt.size(0), n = wt.size(1);
  TORCH_CHECK(x.size(-1) == k, "int8_linear: x has ", x.size(-1), " features, the weight ", k);
  TORCH_CHECK(wscale.scalar_type() == at::kFloat && wscale.is_contiguous() && wscale.numel() == n,
              "int8_linear: wscale must be float32 [", n, "]");
  check_vector(bias, n, "bias");
  check_vector(gamma, n, "gamma");
  check_vector(beta, n, "beta");
  TORCH_CHECK(gamma.has_value() == beta.has_value(), "int8_linear: gamma and beta go together");
  TORCH_CHECK(!(gamma && gelu), "int8_linear: GELU and a norm are not fused together");
  auto x2 = x.reshape({-1, k});
  if (x2.stride(1) != 1) x2 = x2.contiguous();
  const int64_t t = x2.size(0);
  TORCH_CHECK(!residual || (residual->scalar_type() == at::kFloat && residual->is_contiguous() &&
                            residual->numel() == t * n),
              "int8_linear: residual must be a contiguous float32 tensor of the output's shape");

  auto q = at::empty({t, k}, x.options().dtype(at::kChar));
  auto xscale = at::empty({t}, x.options().dtype(at::kFloat));
  const int64_t ld = x2.stride(0);
  int8_t* qp = q.data_ptr<int8_t>();
  float* sp = xscale.data_ptr<float>();
  const bool bf16_in = x2.scalar_type() == at::kBFloat16;
  const void* xp = x2.data_ptr();
  at::parallel_for(0, t, grain(k), [&](int64_t begin, int64_t end) {
    if (bf16_in)
      samp::quantize_rows_bf16(static_cast<const uint16_t*>(xp) + begin * ld, end - begin, k, ld,
                               qp + begin * k, sp + begin);
    else
      samp::quantize_rows_f32(static_cast<const float*>(xp) + begin * ld, end - begin, k, ld,
                              qp + begin * k, sp + begin);
  });
  auto acc = at::_int_mm(q, wt);  // [t, n] int32

  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = n;
  auto y = at::empty(shape, x.options().dtype(out_bf16 ? at::kBFloat16 : at::kFloat));
  samp::Epilogue e{acc.data_ptr<int32_t>(), wscale.data_ptr<float>(), sp,
                   bias ? bias->data_ptr<float>() : nullptr,
                   residual ? residual->data_ptr<float>() : nullptr, gelu,
                   gamma ? gamma->data_ptr<float>() : nullptr,
                   beta ? beta->data_ptr<float>() : nullptr, static_cast<float>(eps), nullptr};
  void* yp = y.data_ptr();
  at::parallel_for(0, t, grain(n), [&](int64_t begin, int64_t end) {
    std::vector<float> norm_buf(gamma ? n : 0);
    samp::Epilogue part = e;
    part.norm_buf = norm_buf.data();
    part.acc += begin * n;
    part.xscale += begin;
    if (part.res) part.res += begin * n;
    if (out_bf16)
      samp::epilogue_bf16(part, end - begin, n, static_cast<uint16_t*>(yp) + begin * n);
    else
      samp::epilogue_f32(part, end - begin, n, static_cast<float*>(yp) + begin * n);
  });
  return y;
}

// Softmax over the last dim of bf16 scores [b, ..., c], computed in fp32, returned as bf16.
// keep: optional bool [b, c], the key-padding mask (true = attend), shared by a batch row's heads
// and queries.
torch::Tensor softmax_bf16(const torch::Tensor& scores, const c10::optional<torch::Tensor>& keep) {
  TORCH_CHECK(scores.device().is_cpu() && scores.scalar_type() == at::kBFloat16,
              "softmax_bf16: scores must be a bfloat16 CPU tensor");
  auto s = scores.contiguous();
  const int64_t c = s.size(-1), b = s.size(0);
  const int64_t rows = s.numel() / std::max<int64_t>(c, 1), per_batch = rows / std::max<int64_t>(b, 1);
  at::Tensor k;
  if (keep) {
    TORCH_CHECK(keep->scalar_type() == at::kBool && keep->numel() == b * c,
                "softmax_bf16: keep must be bool [", b, ", ", c, "]");
    k = keep->contiguous();
  }
  auto out = at::empty_like(s);
  const uint16_t* in = reinterpret_cast<const uint16_t*>(s.data_ptr());
  uint16_t* o = reinterpret_cast<uint16_t*>(out.data_ptr());
  const uint8_t* kp = keep ? reinterpret_cast<const uint8_t*>(k.data_ptr<bool>()) : nullptr;
  at::parallel_for(0, rows, grain(c), [&](int64_t begin, int64_t end) {
    std::vector<float> buf(c);
    for (int64_t r = begin; r < end;) {
      const int64_t batch = r / per_batch;
      const int64_t stop = std::min(end, (batch + 1) * per_batch);
      samp::softmax_rows_bf16(in + r * c, stop - r, c, kp ? kp + batch * c : nullptr, o + r * c,
                              buf.data());
      r = stop;
    }
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.def("int8_linear", &int8_linear, "INT8 linear, per-token activation scales, fused epilogue",
        py::arg("x"), py::arg("wt"), py::arg("wscale"), py::arg("bias") = py::none(),
        py::arg("gelu") = false, py::arg("residual") = py::none(), py::arg("out_bf16") = false,
        py::arg("gamma") = py::none(), py::arg("beta") = py::none(), py::arg("eps") = 0.0);
  m.def("softmax_bf16", &softmax_bf16, "bf16 softmax computed in fp32, optional key mask",
        py::arg("scores"), py::arg("keep") = py::none());
}
