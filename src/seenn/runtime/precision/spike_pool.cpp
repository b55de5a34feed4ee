// seenn's fused inference kernel for int8 spiking layers: charge, fire, reset and k x k sum pooling of the spikes
// in one pass over the membrane. Inputs float32, NCHW-contiguous or channels-last (NHWC memory), both alike.
//   h = x + decay * v          (v absent: h = x, a neuron at rest with v0 = 0)
//   s = h >= threshold
//   v' = soft ? h - s * threshold : (s ? 0 : h)
//   counts[n, c, i, j] = sum of s over the window (i*k .. i*k+k-1, j*k .. j*k+k-1), floor mode, as uint8
// Returns (counts uint8 in x's layout, v' float32 like x). The same numbers as seenn.neuron's eager step followed
// by an average pool (times k^2); tested against it.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <vector>

namespace {

// one element: charge, fire (1.f / 0.f), reset; branch-free so that the loops vectorize
template <bool HAS_V, bool SOFT>
inline float step(const float* __restrict__ x, const float* __restrict__ v, float* __restrict__ vn, int64_t i,
                  float decay, float th) {
  const float hv = HAS_V ? x[i] + decay * v[i] : x[i];
  const float s = static_cast<float>(hv >= th);
  vn[i] = SOFT ? hv - s * th : hv - hv * s;
  return s;
}

// C consecutive elements (one pixel's channels): charge, fire, reset, and add the spikes into a
template <bool HAS_V, bool SOFT>
inline void fire_row(const float* __restrict__ x, const float* __restrict__ v, float* __restrict__ vn,
                     float* __restrict__ a, int64_t C, float decay, float th) {
  for (int64_t c = 0; c < C; ++c) {
    const float hv = HAS_V ? x[c] + decay * v[c] : x[c];
    const float s = static_cast<float>(hv >= th);
    vn[c] = SOFT ? hv - s * th : hv - hv * s;
    a[c] += s;
  }
}

// channels-last: memory [N, H, W, C]; one task per output row (n, i), plus the rows the pool leaves out (membrane
// only). Counts accumulate in a float row buffer (vectorised adds), converted to uint8 at the end of the row.
template <bool HAS_V, bool SOFT>
void nhwc(const float* __restrict__ x, const float* __restrict__ v, float* __restrict__ vn,
          uint8_t* __restrict__ cnt, int64_t N, int64_t C, int64_t H, int64_t W,
          int64_t k, float decay, float th) {
  const int64_t Ho = H / k, Wo = W / k, rows = N * Ho, left = H - Ho * k, extra = N * left;
  at::parallel_for(0, rows + extra, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(Wo * C);
    for (int64_t r = begin; r < end; ++r) {
      if (r >= rows) {  // a row past the last full window
        const int64_t e = r - rows, n = e / left, h = Ho * k + e % left;
        const int64_t base = (n * H + h) * W * C;
        for (int64_t i = 0; i < W * C; ++i) step<HAS_V, SOFT>(x, v, vn, base + i, decay, th);
        continue;
      }
      const int64_t n = r / Ho, oi = r % Ho;
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t h = oi * k; h < oi * k + k; ++h) {
        const int64_t row = (n * H + h) * W * C;
        for (int64_t w = 0; w < Wo * k; ++w) {
          fire_row<HAS_V, SOFT>(x + row + w * C, HAS_V ? v + row + w * C : nullptr, vn + row + w * C,
                                acc.data() + (w / k) * C, C, decay, th);
        }
        for (int64_t i = Wo * k * C; i < W * C; ++i) step<HAS_V, SOFT>(x, v, vn, row + i, decay, th);
      }
      uint8_t* out = cnt + (n * Ho + oi) * Wo * C;
      for (int64_t i = 0; i < Wo * C; ++i) out[i] = static_cast<uint8_t>(acc[i]);
    }
  });
}

// NCHW: one task per (n, c) plane
template <bool HAS_V, bool SOFT>
void nchw(const float* __restrict__ x, const float* __restrict__ v, float* __restrict__ vn,
          uint8_t* __restrict__ cnt, int64_t N, int64_t C, int64_t H, int64_t W,
          int64_t k, float decay, float th) {
  const int64_t Ho = H / k, Wo = W / k;
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> srow(W), acc(Wo);
    for (int64_t p = begin; p < end; ++p) {
      uint8_t* out = cnt + p * Ho * Wo;
      for (int64_t oi = 0; oi < Ho; ++oi) {
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int64_t h = oi * k; h < oi * k + k; ++h) {
          const int64_t base = (p * H + h) * W;
          for (int64_t w = 0; w < W; ++w) srow[w] = step<HAS_V, SOFT>(x, v, vn, base + w, decay, th);
          for (int64_t j = 0; j < Wo; ++j)
            for (int64_t d = 0; d < k; ++d) acc[j] += srow[j * k + d];
        }
        for (int64_t j = 0; j < Wo; ++j) out[oi * Wo + j] = static_cast<uint8_t>(acc[j]);
      }
      for (int64_t h = Ho * k; h < H; ++h) {
        const int64_t base = (p * H + h) * W;
        for (int64_t w = 0; w < W; ++w) step<HAS_V, SOFT>(x, v, vn, base + w, decay, th);
      }
    }
  });
}

template <bool HAS_V, bool SOFT>
void run(bool cl, const float* x, const float* v, float* vn, uint8_t* cnt, int64_t N, int64_t C, int64_t H, int64_t W,
         int64_t k, float decay, float th) {
  if (cl) nhwc<HAS_V, SOFT>(x, v, vn, cnt, N, C, H, W, k, decay, th);
  else nchw<HAS_V, SOFT>(x, v, vn, cnt, N, C, H, W, k, decay, th);
}

}  // namespace

std::vector<at::Tensor> spike_pool(at::Tensor x, c10::optional<at::Tensor> v, double decay, double threshold,
                                   bool soft, int64_t k) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.device().is_cpu(), "x: a float32 CPU [N, C, H, W]");
  TORCH_CHECK(k >= 1 && k * k <= 255, "pool size");
  const bool cl = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  x = x.contiguous(fmt);
  const float* vp = nullptr;
  at::Tensor vv;
  if (v.has_value()) {
    vv = v->contiguous(fmt);
    TORCH_CHECK(vv.sizes() == x.sizes() && vv.scalar_type() == at::kFloat, "v must match x");
    vp = vv.data_ptr<float>();
  }
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  auto vn = at::empty_like(x, x.options(), fmt);
  auto cnt = at::empty({N, C, H / k, W / k}, x.options().dtype(at::kByte), fmt);
  const float d = static_cast<float>(decay), th = static_cast<float>(threshold);
  float* out_v = vn.data_ptr<float>();
  uint8_t* out_c = cnt.data_ptr<uint8_t>();
  const float* xp = x.data_ptr<float>();
  if (vp && soft) run<true, true>(cl, xp, vp, out_v, out_c, N, C, H, W, k, d, th);
  else if (vp) run<true, false>(cl, xp, vp, out_v, out_c, N, C, H, W, k, d, th);
  else if (soft) run<false, true>(cl, xp, vp, out_v, out_c, N, C, H, W, k, d, th);
  else run<false, false>(cl, xp, vp, out_v, out_c, N, C, H, W, k, d, th);
  return {cnt, vn};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("spike_pool", &spike_pool, "fused LIF step + sum pool (uint8)"); }
