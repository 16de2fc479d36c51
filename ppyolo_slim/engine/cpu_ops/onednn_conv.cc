// A Paddle custom operator: 2-D convolution (NCHW, float32, groups 1, no bias) forward and
// backward by oneDNN, the libdnnl.so.3 shipped in the Paddle wheel (headers in
// paddle/include/third_party). The convolution primitives pick their own layouts
// (format_tag::any) and the tensors are reordered from and to NCHW / OIHW around them, as
// Paddle's static-graph oneDNN kernels do. Primitives are cached by shape.
#include <algorithm>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

// The devel headers of oneDNN 3.2 (pip onednn-devel-cpu-gomp==2023.2.0) are built with the
// experimental sparse API, whose *_v2 entry points Paddle 2.6's libdnnl.so.3 lacks: off.
#include "oneapi/dnnl/dnnl_config.h"
#undef DNNL_EXPERIMENTAL_SPARSE
#include "oneapi/dnnl/dnnl.hpp"
#include "paddle/extension.h"

using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

engine& eng() { static engine e(engine::kind::cpu, 0); return e; }
stream& strm() { static stream s(eng()); return s; }

struct Key {
  std::vector<int64_t> x, w;
  int64_t s, p, plain;
  bool operator<(const Key& o) const {
    return std::tie(x, w, s, p, plain) < std::tie(o.x, o.w, o.s, o.p, o.plain);
  }
};

struct Prims {
  memory::desc x_md, w_md, y_md;  // plain (user) layouts
  convolution_forward::primitive_desc fwd_pd;
  convolution_backward_data::primitive_desc bwd_d_pd;
  convolution_backward_weights::primitive_desc bwd_w_pd;
  convolution_forward fwd;
  convolution_backward_data bwd_d;
  convolution_backward_weights bwd_w;
};

// plain = 0: the primitives choose every layout (format_tag::any); 1: activations (src, dst and
// their gradients) stay NCHW, only the weights take the primitive's layout.
Prims& get(const std::vector<int64_t>& xs, const std::vector<int64_t>& ws, int64_t s, int64_t p,
           int64_t plain) {
  static std::map<Key, std::unique_ptr<Prims>> cache;
  Key k{xs, ws, s, p, plain};
  auto it = cache.find(k);
  if (it != cache.end()) return *it->second;
  const int64_t N = xs[0], H = xs[2], W = xs[3], O = ws[0], KH = ws[2], KW = ws[3];
  const int64_t OH = (H + 2 * p - KH) / s + 1, OW = (W + 2 * p - KW) / s + 1;
  memory::dims xd = {N, xs[1], H, W}, wd = {O, ws[1], KH, KW}, yd = {N, O, OH, OW};
  memory::dims st = {s, s}, pad = {p, p};
  auto P = std::make_unique<Prims>();
  P->x_md = memory::desc(xd, dt::f32, tag::nchw);
  P->w_md = memory::desc(wd, dt::f32, tag::oihw);
  P->y_md = memory::desc(yd, dt::f32, tag::nchw);
  const tag act = plain ? tag::nchw : tag::any;
  memory::desc xa(xd, dt::f32, act), wa(wd, dt::f32, tag::any), ya(yd, dt::f32, act);
  P->fwd_pd = convolution_forward::primitive_desc(eng(), prop_kind::forward_training,
      algorithm::convolution_direct, xa, wa, ya, st, pad, pad);
  P->bwd_d_pd = convolution_backward_data::primitive_desc(eng(), algorithm::convolution_direct,
      xa, wa, ya, st, pad, pad, P->fwd_pd);
  P->bwd_w_pd = convolution_backward_weights::primitive_desc(eng(), algorithm::convolution_direct,
      xa, wa, ya, st, pad, pad, P->fwd_pd);
  P->fwd = convolution_forward(P->fwd_pd);
  P->bwd_d = convolution_backward_data(P->bwd_d_pd);
  P->bwd_w = convolution_backward_weights(P->bwd_w_pd);
  auto& ref = *P;
  cache[k] = std::move(P);
  return ref;
}

// Scratch buffers come from Paddle's caching allocator (a paddle::Tensor kept alive in `keep`
// until the kernel returns): oneDNN's own allocation of a fresh buffer for every reorder
// of a large activation would page-fault it in on every call.
memory scratch(const memory::desc& d, std::vector<paddle::Tensor>& keep) {
  const int64_t n = static_cast<int64_t>((d.get_size() + sizeof(float) - 1) / sizeof(float));
  keep.push_back(paddle::empty({n > 0 ? n : 1}, paddle::DataType::FLOAT32, paddle::CPUPlace()));
  return memory(d, eng(), keep.back().data<float>());
}

// user memory `u` as the primitive wants `want`: a reorder into a scratch memory if they differ
memory as(const memory& u, const memory::desc& want, std::vector<paddle::Tensor>& keep) {
  if (u.get_desc() == want) return u;
  memory m = scratch(want, keep);
  reorder(u, m).execute(strm(), const_cast<memory&>(u), m);
  return m;
}

// the primitive's output `got` into user memory `u`
void back(const memory& got, memory& u) {
  if (got.get_desc() == u.get_desc()) return;
  reorder(got, u).execute(strm(), const_cast<memory&>(got), u);
}

void check(const paddle::Tensor& t, const char* n) {
  PD_CHECK(t.is_cpu(), n, " must be on the CPU");
  PD_CHECK(t.dtype() == paddle::DataType::FLOAT32, n, " must be float32");
  PD_CHECK(t.shape().size() == 4, n, " must be 4-D");
}

}  // namespace

std::vector<paddle::Tensor> ConvForward(const paddle::Tensor& x, const paddle::Tensor& w,
                                        int64_t stride, int64_t pad, int64_t plain, int64_t need_dx) {
  check(x, "x"); check(w, "w");
  auto& P = get(x.shape(), w.shape(), stride, pad, plain);
  auto yd = P.y_md.get_dims();
  auto y = paddle::empty({yd[0], yd[1], yd[2], yd[3]}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  memory xu(P.x_md, eng(), const_cast<float*>(x.data<float>()));
  memory wu(P.w_md, eng(), const_cast<float*>(w.data<float>()));
  memory yu(P.y_md, eng(), y.data<float>());
  std::vector<paddle::Tensor> keep;
  memory xm = as(xu, P.fwd_pd.src_desc(), keep), wm = as(wu, P.fwd_pd.weights_desc(), keep);
  memory ym = P.fwd_pd.dst_desc() == P.y_md ? yu : scratch(P.fwd_pd.dst_desc(), keep);
  P.fwd.execute(strm(), {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, ym}});
  back(ym, yu);
  strm().wait();
  return {y};
}

std::vector<paddle::Tensor> ConvBackward(const paddle::Tensor& x, const paddle::Tensor& w,
                                         const paddle::Tensor& dy, int64_t stride, int64_t pad,
                                         int64_t plain, int64_t need_dx) {
  auto& P = get(x.shape(), w.shape(), stride, pad, plain);
  auto dx = paddle::empty(x.shape(), paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto dw = paddle::empty(w.shape(), paddle::DataType::FLOAT32, paddle::CPUPlace());
  memory xu(P.x_md, eng(), const_cast<float*>(x.data<float>()));
  memory wu(P.w_md, eng(), const_cast<float*>(w.data<float>()));
  memory dyu(P.y_md, eng(), const_cast<float*>(dy.data<float>()));
  memory dxu(P.x_md, eng(), dx.data<float>());
  memory dwu(P.w_md, eng(), dw.data<float>());
  // weights
  std::vector<paddle::Tensor> keep;
  memory xm = as(xu, P.bwd_w_pd.src_desc(), keep), dym = as(dyu, P.bwd_w_pd.diff_dst_desc(), keep);
  memory dwm = P.bwd_w_pd.diff_weights_desc() == P.w_md ? dwu : scratch(P.bwd_w_pd.diff_weights_desc(), keep);
  P.bwd_w.execute(strm(), {{DNNL_ARG_SRC, xm}, {DNNL_ARG_DIFF_DST, dym}, {DNNL_ARG_DIFF_WEIGHTS, dwm}});
  back(dwm, dwu);
  if (!need_dx) {  // x is an input without gradient (the image): dx is never read, but zeroed so
    strm().wait();  // that a NaN check over all gradients (FLAGS_check_nan_inf) sees no garbage
    std::fill(dx.data<float>(), dx.data<float>() + dx.numel(), 0.0f);
    return {dx, dw};
  }
  // data
  memory wm = as(wu, P.bwd_d_pd.weights_desc(), keep);
  memory dym2 = P.bwd_d_pd.diff_dst_desc() == dym.get_desc() ? dym : as(dyu, P.bwd_d_pd.diff_dst_desc(), keep);
  memory dxm = P.bwd_d_pd.diff_src_desc() == P.x_md ? dxu : scratch(P.bwd_d_pd.diff_src_desc(), keep);
  P.bwd_d.execute(strm(), {{DNNL_ARG_DIFF_DST, dym2}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DIFF_SRC, dxm}});
  back(dxm, dxu);
  strm().wait();
  return {dx, dw};
}

PD_BUILD_OP(onednn_conv2d)
    .Inputs({"X", "W"})
    .Outputs({"Y"})
    .Attrs({"stride: int64_t", "pad: int64_t", "plain: int64_t", "need_dx: int64_t"})
    .SetKernelFn(PD_KERNEL(ConvForward));

PD_BUILD_GRAD_OP(onednn_conv2d)
    .Inputs({"X", "W", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W")})
    .Attrs({"stride: int64_t", "pad: int64_t", "plain: int64_t", "need_dx: int64_t"})
    .SetKernelFn(PD_KERNEL(ConvBackward));
