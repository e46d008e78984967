// Fused AARM kernels for onnxruntime's CPU execution provider, custom-op domain "com.aarm".
//
// AarmPool(M) -> (global, channel)
//   M (N, C, *S). One read of M gives all four of AARM's poolings:
//   global  (N, C, 1, ...) = global_avg * mean_S(M) + global_max * max_S(M)     (CAM's mixed pool)
//   channel (N, 1, *S)     = channel_avg * mean_C(M) + channel_max * max_C(M)   (STAM's mixed pool)
//   attributes: global_avg, global_max, channel_avg, channel_max (floats).
//
// AarmGate(M, cgate, sgate, w1, w2, bias[, residual]) -> Y
//   Y = act(M * (w1 * cgate + w2 * sgate) + bias [+ residual]), the parallel fusion of eq. (5) rewritten
//   as one pass over M: cgate (N, C, 1, ...) is CAM's map, sgate (N, 1, *S) STAM's, w1 / w2 / bias (C) the
//   channel-wise fusion conv; residual (N, C, *S) is the block's identity branch. attribute relu (int).
//
// AarmPoolNchwc, AarmGateNchwc: the same two ops on onnxruntime's blocked channel layout (NCHWc), which
//   its CPU provider gives its convolutions. A blocked map of shape (N, C, H, W) holds channel c = cb*B + l
//   of pixel s at ((n*C/B + cb)*S + s)*B + l, B = attribute `block` (16 with AVX-512, 8 with AVX2); C must be a
//   multiple of B. AarmPoolNchwc reads a blocked M and writes plain outputs; AarmGateNchwc reads a blocked M
//   and residual and writes a blocked Y (cgate, sgate plain), so a block's output goes on to the next
//   convolution with no layout change. `runtime.blocked_kernels` puts them into onnxruntime's optimised graph.
//
// All ops split their work with onnxruntime's intra-op thread pool (KernelContext_ParallelFor).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "ort_abi.h"

namespace {

using namespace ort_abi;

const void* g_api = nullptr;

OrtStatus* error(const std::string& msg) {
  return fn<CreateStatusFn>(g_api, CreateStatus)(kOrtInvalidArgument, msg.c_str());
}

#define AARM_TRY(expr)               \
  do {                               \
    OrtStatus* status_ = (expr);     \
    if (status_ != nullptr) return status_; \
  } while (0)

struct Tensor {
  const OrtValue* value = nullptr;
  std::vector<int64_t> dims;
  float* data = nullptr;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    return n;
  }
};

OrtStatus* describe(const OrtValue* value, Tensor* out, const char* what) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  AARM_TRY(fn<GetTensorTypeAndShapeFn>(g_api, GetTensorTypeAndShape)(value, &info));
  int type = 0;
  size_t rank = 0;
  OrtStatus* status = fn<GetTensorElementTypeFn>(g_api, GetTensorElementType)(info, &type);
  if (status == nullptr) status = fn<GetDimensionsCountFn>(g_api, GetDimensionsCount)(info, &rank);
  if (status == nullptr) {
    out->dims.assign(rank, 0);
    status = fn<GetDimensionsFn>(g_api, GetDimensions)(info, out->dims.data(), rank);
  }
  fn<ReleaseTensorTypeAndShapeInfoFn>(g_api, ReleaseTensorTypeAndShapeInfo)(info);
  if (status != nullptr) return status;
  if (type != kOrtFloat) return error(std::string(what) + ": expected a float32 tensor");
  out->value = value;
  void* data = nullptr;
  AARM_TRY(fn<GetTensorMutableDataFn>(g_api, GetTensorMutableData)(const_cast<OrtValue*>(value), &data));
  out->data = static_cast<float*>(data);
  return nullptr;
}

OrtStatus* input(OrtKernelContext* ctx, size_t index, Tensor* out, const char* what) {
  const OrtValue* value = nullptr;
  AARM_TRY(fn<KernelContextGetInputFn>(g_api, KernelContext_GetInput)(ctx, index, &value));
  if (value == nullptr) return error(std::string(what) + ": missing input");
  return describe(value, out, what);
}

OrtStatus* output(OrtKernelContext* ctx, size_t index, const std::vector<int64_t>& dims, Tensor* out) {
  OrtValue* value = nullptr;
  AARM_TRY(fn<KernelContextGetOutputFn>(g_api, KernelContext_GetOutput)(ctx, index, dims.data(), dims.size(), &value));
  return describe(value, out, "output");
}

// Runs task(data, i) for i in [0, total) on onnxruntime's intra-op pool, serially if it is unavailable.
void parallel_for(OrtKernelContext* ctx, void (*task)(void*, size_t), size_t total, void* data) {
  OrtStatus* status = fn<ParallelForFn>(g_api, KernelContext_ParallelFor)(ctx, task, total, 0, data);
  if (status == nullptr) return;
  fn<ReleaseStatusFn>(g_api, ReleaseStatus)(status);
  for (size_t i = 0; i < total; ++i) task(data, i);
}

OrtStatus* float_attr(const OrtKernelInfo* info, const char* name, float* out) {
  OrtStatus* status = fn<KernelInfoGetAttributeFloatFn>(g_api, KernelInfoGetAttribute_float)(info, name, out);
  if (status == nullptr) return nullptr;
  fn<ReleaseStatusFn>(g_api, ReleaseStatus)(status);
  return error(std::string("missing float attribute ") + name);
}

// ------------------------------------------------------------------------------------------------ AarmPool

struct PoolKernel {
  float global_avg, global_max, channel_avg, channel_max;
};

struct PoolWork {
  const float* x;
  float* channel;   // (N, S)
  float* part_sum;  // (N, P, C)
  float* part_max;  // (N, P, C)
  int64_t C, S, chunk, P;
  float channel_avg, channel_max;
};

void pool_task(void* data, size_t index) {
  const PoolWork& w = *static_cast<const PoolWork*>(data);
  const int64_t n = static_cast<int64_t>(index) / w.P, p = static_cast<int64_t>(index) % w.P;
  const int64_t s0 = p * w.chunk, len = std::min(w.S, s0 + w.chunk) - s0;
  std::vector<float> acc(2 * len);
  float* acc_sum = acc.data();
  float* acc_max = acc.data() + len;
  const float* base = w.x + n * w.C * w.S + s0;
  float* psum = w.part_sum + (n * w.P + p) * w.C;
  float* pmax = w.part_max + (n * w.P + p) * w.C;
  for (int64_t c = 0; c < w.C; ++c) {
    const float* row = base + c * w.S;
    float vs[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    float vm[8];
    std::fill(vm, vm + 8, -std::numeric_limits<float>::infinity());
    int64_t i = 0;
    if (c == 0) {
      std::memcpy(acc_sum, row, len * sizeof(float));
      std::memcpy(acc_max, row, len * sizeof(float));
    }
#if defined(__AVX__)
    __m256 sum8 = _mm256_setzero_ps(), max8 = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    if (c == 0) {
      for (; i + 8 <= len; i += 8) {
        const __m256 v = _mm256_loadu_ps(row + i);
        sum8 = _mm256_add_ps(sum8, v);
        max8 = _mm256_max_ps(max8, v);
      }
    } else {
      for (; i + 8 <= len; i += 8) {
        const __m256 v = _mm256_loadu_ps(row + i);
        sum8 = _mm256_add_ps(sum8, v);
        max8 = _mm256_max_ps(max8, v);
        _mm256_storeu_ps(acc_sum + i, _mm256_add_ps(_mm256_loadu_ps(acc_sum + i), v));
        _mm256_storeu_ps(acc_max + i, _mm256_max_ps(_mm256_loadu_ps(acc_max + i), v));
      }
    }
    _mm256_storeu_ps(vs, sum8);
    _mm256_storeu_ps(vm, max8);
#else
    for (; i + 8 <= len; i += 8)
      for (int k = 0; k < 8; ++k) {
        const float v = row[i + k];
        vs[k] += v;
        vm[k] = vm[k] > v ? vm[k] : v;
        if (c > 0) {
          acc_sum[i + k] += v;
          acc_max[i + k] = acc_max[i + k] > v ? acc_max[i + k] : v;
        }
      }
#endif
    float s = 0.f, m = -std::numeric_limits<float>::infinity();
    for (; i < len; ++i) {
      const float v = row[i];
      s += v;
      m = m > v ? m : v;
      if (c > 0) {
        acc_sum[i] += v;
        acc_max[i] = acc_max[i] > v ? acc_max[i] : v;
      }
    }
    for (int k = 0; k < 8; ++k) {
      s += vs[k];
      m = m > vm[k] ? m : vm[k];
    }
    psum[c] = s;
    pmax[c] = m;
  }
  float* out = w.channel + n * w.S + s0;
  const float inv_c = 1.f / static_cast<float>(w.C);
  for (int64_t i = 0; i < len; ++i) out[i] = w.channel_avg * (acc_sum[i] * inv_c) + w.channel_max * acc_max[i];
}

// Runs a pool task over (clip, chunk of `chunk` pixels) pairs on the thread pool (each writes its pixels' channel
// pool and its per-channel partial sums and maxima), then reduces the partials into the global pool g (N, C).
void pool_run(OrtKernelContext* ctx, const PoolKernel& k, void (*task)(void*, size_t), const float* x, float* g,
              float* channel, int64_t N, int64_t C, int64_t S, int64_t chunk) {
  const int64_t P = (S + chunk - 1) / chunk;
  std::vector<float> part(2 * N * P * C);
  PoolWork work{x, channel, part.data(), part.data() + N * P * C, C, S, chunk, P, k.channel_avg, k.channel_max};
  parallel_for(ctx, task, static_cast<size_t>(N * P), &work);
  const float inv_s = 1.f / static_cast<float>(S);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      float s = 0.f, m = -std::numeric_limits<float>::infinity();
      for (int64_t p = 0; p < P; ++p) {
        s += work.part_sum[(n * P + p) * C + c];
        m = std::max(m, work.part_max[(n * P + p) * C + c]);
      }
      g[n * C + c] = k.global_avg * (s * inv_s) + k.global_max * m;
    }
}

OrtStatus* pool_compute(void* kernel, OrtKernelContext* ctx) {
  const PoolKernel& k = *static_cast<const PoolKernel*>(kernel);
  Tensor x;
  AARM_TRY(input(ctx, 0, &x, "AarmPool input"));
  if (x.dims.size() < 3) return error("AarmPool: input must be (N, C, *S)");
  const int64_t N = x.dims[0], C = x.dims[1], S = x.numel() / std::max<int64_t>(N * C, 1);
  std::vector<int64_t> gdims(x.dims.size(), 1), cdims(x.dims);
  gdims[0] = N;
  gdims[1] = C;
  cdims[1] = 1;
  Tensor g, ch;
  AARM_TRY(output(ctx, 0, gdims, &g));
  AARM_TRY(output(ctx, 1, cdims, &ch));
  if (N * C * S == 0) return nullptr;
  pool_run(ctx, k, pool_task, x.data, g.data, ch.data, N, C, S, std::min<int64_t>(S, 2048));
  return nullptr;
}

OrtStatus* pool_create(const OrtCustomOp*, const void*, const OrtKernelInfo* info, void** kernel) {
  auto* k = new PoolKernel{};
  OrtStatus* status = float_attr(info, "global_avg", &k->global_avg);
  if (status == nullptr) status = float_attr(info, "global_max", &k->global_max);
  if (status == nullptr) status = float_attr(info, "channel_avg", &k->channel_avg);
  if (status == nullptr) status = float_attr(info, "channel_max", &k->channel_max);
  if (status != nullptr) {
    delete k;
    return status;
  }
  *kernel = k;
  return nullptr;
}

void pool_destroy(void* kernel) { delete static_cast<PoolKernel*>(kernel); }

// ------------------------------------------------------------------------------------------------ AarmGate

struct GateKernel {
  int64_t relu;
};

struct GateWork {
  const float *x, *cgate, *sgate, *w1, *w2, *bias, *residual;
  float* out;
  int64_t C, S, rows, rows_per_task;
  bool relu;
};

template <bool kResidual, bool kRelu>
void gate_rows(const GateWork& w, int64_t r0, int64_t r1) {
  for (int64_t row = r0; row < r1; ++row) {
    const int64_t n = row / w.C, c = row % w.C;
    const float a = w.cgate[row] * w.w1[c], ws = w.w2[c], b = w.bias[c];
    const float* x = w.x + row * w.S;
    const float* s = w.sgate + n * w.S;
    const float* r = kResidual ? w.residual + row * w.S : nullptr;
    float* o = w.out + row * w.S;
    for (int64_t i = 0; i < w.S; ++i) {
      float v = x[i] * (a + s[i] * ws) + b;
      if (kResidual) v += r[i];
      if (kRelu) v = v > 0.f ? v : 0.f;
      o[i] = v;
    }
  }
}

void gate_task(void* data, size_t index) {
  const GateWork& w = *static_cast<const GateWork*>(data);
  const int64_t r0 = static_cast<int64_t>(index) * w.rows_per_task, r1 = std::min(w.rows, r0 + w.rows_per_task);
  if (w.residual != nullptr)
    w.relu ? gate_rows<true, true>(w, r0, r1) : gate_rows<true, false>(w, r0, r1);
  else
    w.relu ? gate_rows<false, true>(w, r0, r1) : gate_rows<false, false>(w, r0, r1);
}

// Checks a blocked map (N, C, H, W) against the block size; S = H * W.
OrtStatus* blocked_dims(const Tensor& x, int64_t block, const char* op, int64_t* N, int64_t* C, int64_t* S) {
  if (x.dims.size() != 4) return error(std::string(op) + ": M must be a 4-D blocked map (N, C, H, W)");
  *N = x.dims[0];
  *C = x.dims[1];
  *S = x.dims[2] * x.dims[3];
  if (*C % block != 0) return error(std::string(op) + ": channels must be a multiple of the block size");
  return nullptr;
}

// Reads a gate's inputs (M, channel gate, spatial gate, w1, w2, bias, optional residual), checks their shapes and
// allocates Y with M's shape; `block` is 1 for AarmGate (M (N, C, *S)), B for AarmGateNchwc (M a blocked 4-D map).
// Fills `work` for rows of S * block values (N * C / block of them) in tasks of at most 1/64 of the rows.
OrtStatus* gate_io(OrtKernelContext* ctx, const std::string& op, int64_t block, bool relu, GateWork* work) {
  size_t count = 0;
  AARM_TRY(fn<KernelContextGetInputCountFn>(g_api, KernelContext_GetInputCount)(ctx, &count));
  Tensor x, cg, sg, w1, w2, b, r;
  AARM_TRY(input(ctx, 0, &x, (op + " M").c_str()));
  AARM_TRY(input(ctx, 1, &cg, (op + " channel gate").c_str()));
  AARM_TRY(input(ctx, 2, &sg, (op + " spatial gate").c_str()));
  AARM_TRY(input(ctx, 3, &w1, (op + " w1").c_str()));
  AARM_TRY(input(ctx, 4, &w2, (op + " w2").c_str()));
  AARM_TRY(input(ctx, 5, &b, (op + " bias").c_str()));
  const OrtValue* res_value = nullptr;
  if (count > 6) AARM_TRY(fn<KernelContextGetInputFn>(g_api, KernelContext_GetInput)(ctx, 6, &res_value));
  if (res_value != nullptr) AARM_TRY(describe(res_value, &r, (op + " residual").c_str()));
  int64_t N = 0, C = 0, S = 0;
  if (block > 1) {
    AARM_TRY(blocked_dims(x, block, op.c_str(), &N, &C, &S));
  } else {
    if (x.dims.size() < 3) return error(op + ": M must be (N, C, *S)");
    N = x.dims[0], C = x.dims[1], S = x.numel() / std::max<int64_t>(N * C, 1);
  }
  if (cg.numel() != N * C) return error(op + ": channel gate must be (N, C, 1, ...)");
  if (sg.numel() != N * S) return error(op + ": spatial gate must be (N, 1, *S)");
  if (w1.numel() != C || w2.numel() != C || b.numel() != C) return error(op + ": w1, w2, bias must have C values");
  if (res_value != nullptr && r.dims != x.dims) return error(op + ": residual must have M's shape");
  Tensor y;
  AARM_TRY(output(ctx, 0, x.dims, &y));
  const int64_t rows = N * C / block;
  const int64_t per = std::max<int64_t>(1, (rows + 63) / 64);
  *work = GateWork{x.data, cg.data, sg.data, w1.data, w2.data, b.data, res_value ? r.data : nullptr, y.data,
                   C, S, rows, per, relu};
  return nullptr;
}

OrtStatus* gate_compute(void* kernel, OrtKernelContext* ctx) {
  GateWork work{};
  AARM_TRY(gate_io(ctx, "AarmGate", 1, static_cast<const GateKernel*>(kernel)->relu != 0, &work));
  if (work.rows * work.S == 0) return nullptr;
  parallel_for(ctx, gate_task, static_cast<size_t>((work.rows + work.rows_per_task - 1) / work.rows_per_task), &work);
  return nullptr;
}

OrtStatus* gate_create(const OrtCustomOp*, const void*, const OrtKernelInfo* info, void** kernel) {
  auto* k = new GateKernel{0};
  OrtStatus* status = fn<KernelInfoGetAttributeInt64Fn>(g_api, KernelInfoGetAttribute_int64)(info, "relu", &k->relu);
  if (status != nullptr) {  // optional attribute: absent means no activation
    fn<ReleaseStatusFn>(g_api, ReleaseStatus)(status);
    k->relu = 0;
  }
  *kernel = k;
  return nullptr;
}

void gate_destroy(void* kernel) { delete static_cast<GateKernel*>(kernel); }

// ------------------------------------------------------------------------------- blocked (NCHWc) variants

OrtStatus* block_attr(const OrtKernelInfo* info, int64_t* out) {
  OrtStatus* status = fn<KernelInfoGetAttributeInt64Fn>(g_api, KernelInfoGetAttribute_int64)(info, "block", out);
  if (status != nullptr) {
    fn<ReleaseStatusFn>(g_api, ReleaseStatus)(status);
    return error("missing int attribute block");
  }
  if (*out != 8 && *out != 16) return error("attribute block must be 8 or 16");
  return nullptr;
}

// B floats of one pixel, as one SIMD register where the compiler targets AVX-512 (B = 16) or AVX (B = 8).
// max(a, b) returns b when either is NaN, as `a > b ? a : b` and the plain kernels do.
template <int B>
struct Lanes {
  float v[B];
  static Lanes load(const float* p) {
    Lanes r;
    std::memcpy(r.v, p, sizeof(r.v));
    return r;
  }
  void store(float* p) const { std::memcpy(p, v, sizeof(v)); }
  static Lanes fill(float x) {
    Lanes r;
    std::fill(r.v, r.v + B, x);
    return r;
  }
  friend Lanes operator+(const Lanes& a, const Lanes& b) {
    Lanes r;
    for (int l = 0; l < B; ++l) r.v[l] = a.v[l] + b.v[l];
    return r;
  }
  friend Lanes operator*(const Lanes& a, const Lanes& b) {
    Lanes r;
    for (int l = 0; l < B; ++l) r.v[l] = a.v[l] * b.v[l];
    return r;
  }
  static Lanes max(const Lanes& a, const Lanes& b) {
    Lanes r;
    for (int l = 0; l < B; ++l) r.v[l] = a.v[l] > b.v[l] ? a.v[l] : b.v[l];
    return r;
  }
};

#if defined(__AVX512F__)
template <>
struct Lanes<16> {
  __m512 v;
  static Lanes load(const float* p) { return {_mm512_loadu_ps(p)}; }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
  static Lanes fill(float x) { return {_mm512_set1_ps(x)}; }
  friend Lanes operator+(Lanes a, Lanes b) { return {_mm512_add_ps(a.v, b.v)}; }
  friend Lanes operator*(Lanes a, Lanes b) { return {_mm512_mul_ps(a.v, b.v)}; }
  static Lanes max(Lanes a, Lanes b) { return {_mm512_max_ps(a.v, b.v)}; }
};
#endif

#if defined(__AVX__)
template <>
struct Lanes<8> {
  __m256 v;
  static Lanes load(const float* p) { return {_mm256_loadu_ps(p)}; }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
  static Lanes fill(float x) { return {_mm256_set1_ps(x)}; }
  friend Lanes operator+(Lanes a, Lanes b) { return {_mm256_add_ps(a.v, b.v)}; }
  friend Lanes operator*(Lanes a, Lanes b) { return {_mm256_mul_ps(a.v, b.v)}; }
  static Lanes max(Lanes a, Lanes b) { return {_mm256_max_ps(a.v, b.v)}; }
};
#endif

struct BlockedPoolKernel {
  PoolKernel pool;
  int64_t block;
};

// part_sum / part_max: (N, P, C) in channel order, as in PoolWork. A task takes `chunk` pixels of one clip,
// few enough that their per-lane sums and maxima (chunk x B each) stay in L1 while it walks the C / B blocks,
// and reduces them over the B lanes at the end.
template <int B>
void blocked_pool_task(void* data, size_t index) {
  using V = Lanes<B>;
  const PoolWork& w = *static_cast<const PoolWork*>(data);
  const int64_t n = static_cast<int64_t>(index) / w.P, p = static_cast<int64_t>(index) % w.P;
  const int64_t s0 = p * w.chunk, len = std::min(w.S, s0 + w.chunk) - s0, CB = w.C / B;
  std::vector<float> acc(2 * len * B);
  float* acc_sum = acc.data();
  float* acc_max = acc.data() + len * B;
  float* psum = w.part_sum + (n * w.P + p) * w.C;
  float* pmax = w.part_max + (n * w.P + p) * w.C;
  // Four blocks at a time: four read streams, and the per-pixel accumulators touched once per four blocks.
  const float ninf = -std::numeric_limits<float>::infinity();
  int64_t cb = 0;
  for (; cb + 4 <= CB; cb += 4) {
    const float* b0 = w.x + ((n * CB + cb) * w.S + s0) * B;
    const int64_t step = w.S * B;
    V gs0 = V::fill(0.f), gs1 = gs0, gs2 = gs0, gs3 = gs0;
    V gm0 = V::fill(ninf), gm1 = gm0, gm2 = gm0, gm3 = gm0;
    for (int64_t i = 0; i < len; ++i) {
      const V v0 = V::load(b0 + i * B), v1 = V::load(b0 + step + i * B);
      const V v2 = V::load(b0 + 2 * step + i * B), v3 = V::load(b0 + 3 * step + i * B);
      gs0 = gs0 + v0, gs1 = gs1 + v1, gs2 = gs2 + v2, gs3 = gs3 + v3;
      gm0 = V::max(gm0, v0), gm1 = V::max(gm1, v1), gm2 = V::max(gm2, v2), gm3 = V::max(gm3, v3);
      const V sum = ((v0 + v1) + v2) + v3, mx = V::max(V::max(V::max(v0, v1), v2), v3);
      if (cb == 0) {
        sum.store(acc_sum + i * B);
        mx.store(acc_max + i * B);
      } else {
        (V::load(acc_sum + i * B) + sum).store(acc_sum + i * B);
        V::max(V::load(acc_max + i * B), mx).store(acc_max + i * B);
      }
    }
    gs0.store(psum + cb * B), gs1.store(psum + (cb + 1) * B), gs2.store(psum + (cb + 2) * B);
    gs3.store(psum + (cb + 3) * B);
    gm0.store(pmax + cb * B), gm1.store(pmax + (cb + 1) * B), gm2.store(pmax + (cb + 2) * B);
    gm3.store(pmax + (cb + 3) * B);
  }
  for (; cb < CB; ++cb) {
    const float* blk = w.x + ((n * CB + cb) * w.S + s0) * B;
    V gs = V::fill(0.f), gm = V::fill(ninf);
    for (int64_t i = 0; i < len; ++i) {
      const V v = V::load(blk + i * B);
      if (cb == 0) {
        v.store(acc_sum + i * B);
        v.store(acc_max + i * B);
      } else {
        (V::load(acc_sum + i * B) + v).store(acc_sum + i * B);
        V::max(V::load(acc_max + i * B), v).store(acc_max + i * B);
      }
      gs = gs + v;
      gm = V::max(gm, v);
    }
    gs.store(psum + cb * B);
    gm.store(pmax + cb * B);
  }
  float* out = w.channel + n * w.S + s0;
  const float inv_c = 1.f / static_cast<float>(w.C);
  for (int64_t i = 0; i < len; ++i) {
    float s = 0.f, m = -std::numeric_limits<float>::infinity();
    for (int l = 0; l < B; ++l) {
      s += acc_sum[i * B + l];
      m = m > acc_max[i * B + l] ? m : acc_max[i * B + l];
    }
    out[i] = w.channel_avg * (s * inv_c) + w.channel_max * m;
  }
}

OrtStatus* blocked_pool_compute(void* kernel, OrtKernelContext* ctx) {
  const BlockedPoolKernel& k = *static_cast<const BlockedPoolKernel*>(kernel);
  Tensor x;
  AARM_TRY(input(ctx, 0, &x, "AarmPoolNchwc input"));
  int64_t N = 0, C = 0, S = 0;
  AARM_TRY(blocked_dims(x, k.block, "AarmPoolNchwc", &N, &C, &S));
  Tensor g, ch;
  AARM_TRY(output(ctx, 0, {N, C, 1, 1}, &g));
  AARM_TRY(output(ctx, 1, {N, 1, x.dims[2], x.dims[3]}, &ch));
  if (N * C * S == 0) return nullptr;
  const int64_t chunk = std::min<int64_t>(S, 2048 / k.block);  // 2 x chunk x B floats: 16 KiB
  pool_run(ctx, k.pool, k.block == 16 ? blocked_pool_task<16> : blocked_pool_task<8>, x.data, g.data, ch.data, N, C,
           S, chunk);
  return nullptr;
}

OrtStatus* blocked_pool_create(const OrtCustomOp* op, const void* api, const OrtKernelInfo* info, void** kernel) {
  void* plain = nullptr;
  AARM_TRY(pool_create(op, api, info, &plain));
  auto* k = new BlockedPoolKernel{*static_cast<PoolKernel*>(plain), 0};
  pool_destroy(plain);
  OrtStatus* status = block_attr(info, &k->block);
  if (status != nullptr) {
    delete k;
    return status;
  }
  *kernel = k;
  return nullptr;
}

void blocked_pool_destroy(void* kernel) { delete static_cast<BlockedPoolKernel*>(kernel); }

constexpr int64_t kStreamBytes = int64_t{4} << 20;  // gate outputs above this are streamed (> a core's L2)

struct BlockedGateKernel {
  int64_t relu, block;
};

// rows = N * C / B blocks of S * B values; the same arithmetic, in the same order, as gate_rows.
// kStream: write Y with non-temporal stores (AVX-512), for maps too large to stay in cache for their readers:
// no read-for-ownership of Y's cache lines, a quarter less memory traffic.
template <int B, bool kResidual, bool kRelu, bool kStream>
void blocked_gate_rows(const GateWork& w, int64_t r0, int64_t r1) {
  using V = Lanes<B>;
  const int64_t CB = w.C / B;
  for (int64_t row = r0; row < r1; ++row) {
    const int64_t n = row / CB, cb = row % CB;
    float a_[B];
    for (int l = 0; l < B; ++l) a_[l] = w.cgate[n * w.C + cb * B + l] * w.w1[cb * B + l];
    const V a = V::load(a_), ws = V::load(w.w2 + cb * B), b = V::load(w.bias + cb * B), zero = V::fill(0.f);
    const float* x = w.x + row * w.S * B;
    const float* s = w.sgate + n * w.S;
    const float* r = kResidual ? w.residual + row * w.S * B : nullptr;
    float* o = w.out + row * w.S * B;
    for (int64_t i = 0; i < w.S; ++i) {
      V v = V::load(x + i * B) * (a + V::fill(s[i]) * ws) + b;
      if (kResidual) v = v + V::load(r + i * B);
      if (kRelu) v = V::max(v, zero);
#if defined(__AVX512F__)
      if constexpr (kStream && B == 16) {
        _mm512_stream_ps(o + i * B, v.v);
        continue;
      }
#endif
      v.store(o + i * B);
    }
  }
}

template <int B, bool kStream>
void blocked_gate_task(void* data, size_t index) {
  const GateWork& w = *static_cast<const GateWork*>(data);
  const int64_t r0 = static_cast<int64_t>(index) * w.rows_per_task, r1 = std::min(w.rows, r0 + w.rows_per_task);
  if (w.residual != nullptr)
    w.relu ? blocked_gate_rows<B, true, true, kStream>(w, r0, r1)
           : blocked_gate_rows<B, true, false, kStream>(w, r0, r1);
  else
    w.relu ? blocked_gate_rows<B, false, true, kStream>(w, r0, r1)
           : blocked_gate_rows<B, false, false, kStream>(w, r0, r1);
#if defined(__AVX512F__)
  if (kStream) _mm_sfence();  // the streamed stores are visible before the task reports done
#endif
}

OrtStatus* blocked_gate_compute(void* kernel, OrtKernelContext* ctx) {
  const BlockedGateKernel& k = *static_cast<const BlockedGateKernel*>(kernel);
  GateWork work{};
  AARM_TRY(gate_io(ctx, "AarmGateNchwc", k.block, k.relu != 0, &work));
  if (work.rows * work.S == 0) return nullptr;
  const bool stream = work.rows * work.S * k.block * static_cast<int64_t>(sizeof(float)) > kStreamBytes &&
                      reinterpret_cast<uintptr_t>(work.out) % 64 == 0;  // streamed stores need 64-byte alignment
  const auto task = k.block == 16 ? (stream ? blocked_gate_task<16, true> : blocked_gate_task<16, false>)
                                  : blocked_gate_task<8, false>;
  parallel_for(ctx, task, static_cast<size_t>((work.rows + work.rows_per_task - 1) / work.rows_per_task), &work);
  return nullptr;
}

OrtStatus* blocked_gate_create(const OrtCustomOp* op, const void* api, const OrtKernelInfo* info, void** kernel) {
  void* plain = nullptr;
  AARM_TRY(gate_create(op, api, info, &plain));
  auto* k = new BlockedGateKernel{static_cast<GateKernel*>(plain)->relu, 0};
  gate_destroy(plain);
  OrtStatus* status = block_attr(info, &k->block);
  if (status != nullptr) {
    delete k;
    return status;
  }
  *kernel = k;
  return nullptr;
}

void blocked_gate_destroy(void* kernel) { delete static_cast<BlockedGateKernel*>(kernel); }

// ------------------------------------------------------------------------------------------ registration

int float_type(const OrtCustomOp*, size_t) { return kOrtFloat; }
const char* cpu_provider(const OrtCustomOp*) { return nullptr; }  // null: the CPU execution provider
int required(const OrtCustomOp*, size_t) { return kOrtRequired; }
int gate_input_characteristic(const OrtCustomOp*, size_t index) { return index == 6 ? kOrtOptional : kOrtRequired; }
int default_memory(const OrtCustomOp*, size_t) { return 0; }
int one(const OrtCustomOp*) { return 1; }
void* no_v1_kernel(const OrtCustomOp*, const void*, const OrtKernelInfo*) { return nullptr; }
void no_v1_compute(void*, OrtKernelContext*) {}

const char* pool_name(const OrtCustomOp*) { return "AarmPool"; }
const char* gate_name(const OrtCustomOp*) { return "AarmGate"; }
const char* blocked_pool_name(const OrtCustomOp*) { return "AarmPoolNchwc"; }
const char* blocked_gate_name(const OrtCustomOp*) { return "AarmGateNchwc"; }
size_t pool_inputs(const OrtCustomOp*) { return 1; }
size_t pool_outputs(const OrtCustomOp*) { return 2; }
size_t gate_inputs(const OrtCustomOp*) { return 7; }
size_t gate_outputs(const OrtCustomOp*) { return 1; }

OrtCustomOp make_op(const char* (*name)(const OrtCustomOp*), size_t (*inputs)(const OrtCustomOp*),
                    size_t (*outputs)(const OrtCustomOp*), int (*input_characteristic)(const OrtCustomOp*, size_t),
                    OrtStatus* (*create)(const OrtCustomOp*, const void*, const OrtKernelInfo*, void**),
                    OrtStatus* (*compute)(void*, OrtKernelContext*), void (*destroy)(void*)) {
  OrtCustomOp op{};
  op.version = kCustomOpVersion;
  op.CreateKernel = no_v1_kernel;
  op.GetName = name;
  op.GetExecutionProviderType = cpu_provider;
  op.GetInputType = float_type;
  op.GetInputTypeCount = inputs;
  op.GetOutputType = float_type;
  op.GetOutputTypeCount = outputs;
  op.KernelCompute = no_v1_compute;
  op.KernelDestroy = destroy;
  op.GetInputCharacteristic = input_characteristic;
  op.GetOutputCharacteristic = required;
  op.GetInputMemoryType = default_memory;
  op.GetVariadicInputMinArity = one;
  op.GetVariadicInputHomogeneity = one;
  op.GetVariadicOutputMinArity = one;
  op.GetVariadicOutputHomogeneity = one;
  op.CreateKernelV2 = create;
  op.KernelComputeV2 = compute;
  return op;
}

OrtCustomOp g_pool_op;
OrtCustomOp g_gate_op;
OrtCustomOp g_blocked_pool_op;
OrtCustomOp g_blocked_gate_op;

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* RegisterCustomOps(OrtSessionOptions* options,
                                                                                const OrtApiBase* base) {
  g_api = base->GetApi(kApiVersion);
  if (g_api == nullptr) {
    const void* v1 = base->GetApi(1);
    return fn<CreateStatusFn>(v1, CreateStatus)(kOrtFail, "aarm kernels need onnxruntime C API version >= 16");
  }
  g_pool_op = make_op(pool_name, pool_inputs, pool_outputs, required, pool_create, pool_compute, pool_destroy);
  g_gate_op = make_op(gate_name, gate_inputs, gate_outputs, gate_input_characteristic, gate_create, gate_compute,
                      gate_destroy);
  g_blocked_pool_op = make_op(blocked_pool_name, pool_inputs, pool_outputs, required, blocked_pool_create,
                              blocked_pool_compute, blocked_pool_destroy);
  g_blocked_gate_op = make_op(blocked_gate_name, gate_inputs, gate_outputs, gate_input_characteristic,
                              blocked_gate_create, blocked_gate_compute, blocked_gate_destroy);
  OrtCustomOpDomain* domain = nullptr;
  AARM_TRY(fn<CreateCustomOpDomainFn>(g_api, CreateCustomOpDomain)("com.aarm", &domain));
  AARM_TRY(fn<CustomOpDomainAddFn>(g_api, CustomOpDomain_Add)(domain, &g_pool_op));
  AARM_TRY(fn<CustomOpDomainAddFn>(g_api, CustomOpDomain_Add)(domain, &g_gate_op));
  AARM_TRY(fn<CustomOpDomainAddFn>(g_api, CustomOpDomain_Add)(domain, &g_blocked_pool_op));
  AARM_TRY(fn<CustomOpDomainAddFn>(g_api, CustomOpDomain_Add)(domain, &g_blocked_gate_op));
  return fn<AddCustomOpDomainFn>(g_api, AddCustomOpDomain)(options, domain);
}
