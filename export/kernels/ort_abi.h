// The slice of onnxruntime's stable C ABI that a CPU custom-op library needs, declared here because the
// onnxruntime wheels ship no headers. onnxruntime's `OrtApi` is an append-only table of function pointers
// (entries keep their position across releases), reached through the exported `OrtGetApiBase`; a library
// registers its ops from `RegisterCustomOps(OrtSessionOptions*, const OrtApiBase*)`.
//
// Only the entries used by aarm_ops.cc are named, by their position in the table (see onnxruntime's
// onnxruntime_c_api.h, `struct OrtApi`). `OrtCustomOp` is declared up to the fields of its version 16.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {

struct OrtStatus;
struct OrtSessionOptions;
struct OrtCustomOpDomain;
struct OrtKernelInfo;
struct OrtKernelContext;
struct OrtValue;
struct OrtTensorTypeAndShapeInfo;

enum OrtErrorCodeAbi { kOrtOk = 0, kOrtFail = 1, kOrtInvalidArgument = 2 };
enum OrtElementTypeAbi { kOrtFloat = 1 };
enum OrtCharacteristicAbi { kOrtRequired = 0, kOrtOptional = 1 };

struct OrtApiBase {
  const void* (*GetApi)(uint32_t version);
  const char* (*GetVersionString)();
};

// OrtCustomOp, field for field; `version` tells onnxruntime how many of the fields it may read.
struct OrtCustomOp {
  uint32_t version;
  void* (*CreateKernel)(const OrtCustomOp* op, const void* api, const OrtKernelInfo* info);
  const char* (*GetName)(const OrtCustomOp* op);
  const char* (*GetExecutionProviderType)(const OrtCustomOp* op);
  int (*GetInputType)(const OrtCustomOp* op, size_t index);
  size_t (*GetInputTypeCount)(const OrtCustomOp* op);
  int (*GetOutputType)(const OrtCustomOp* op, size_t index);
  size_t (*GetOutputTypeCount)(const OrtCustomOp* op);
  void (*KernelCompute)(void* kernel, OrtKernelContext* context);
  void (*KernelDestroy)(void* kernel);
  int (*GetInputCharacteristic)(const OrtCustomOp* op, size_t index);
  int (*GetOutputCharacteristic)(const OrtCustomOp* op, size_t index);
  int (*GetInputMemoryType)(const OrtCustomOp* op, size_t index);
  int (*GetVariadicInputMinArity)(const OrtCustomOp* op);
  int (*GetVariadicInputHomogeneity)(const OrtCustomOp* op);
  int (*GetVariadicOutputMinArity)(const OrtCustomOp* op);
  int (*GetVariadicOutputHomogeneity)(const OrtCustomOp* op);
  OrtStatus* (*CreateKernelV2)(const OrtCustomOp* op, const void* api, const OrtKernelInfo* info, void** kernel);
  OrtStatus* (*KernelComputeV2)(void* kernel, OrtKernelContext* context);
};

}  // extern "C"

namespace ort_abi {

// API version requested from GetApi: KernelContext_ParallelFor is the newest entry used.
constexpr uint32_t kApiVersion = 16;
constexpr uint32_t kCustomOpVersion = 16;

// Positions in the OrtApi table.
enum Entry : int {
  CreateStatus = 0,
  GetErrorMessage = 2,
  CreateCustomOpDomain = 26,
  CustomOpDomain_Add = 27,
  AddCustomOpDomain = 28,
  GetTensorMutableData = 51,
  GetTensorElementType = 60,
  GetDimensionsCount = 61,
  GetDimensions = 62,
  GetTensorTypeAndShape = 65,
  KernelInfoGetAttribute_float = 85,
  KernelInfoGetAttribute_int64 = 86,
  KernelContext_GetInputCount = 88,
  KernelContext_GetInput = 90,
  KernelContext_GetOutput = 91,
  ReleaseStatus = 93,
  ReleaseTensorTypeAndShapeInfo = 99,
  KernelContext_ParallelFor = 274,
};

using CreateStatusFn = OrtStatus* (*)(int code, const char* msg);
using GetErrorMessageFn = const char* (*)(const OrtStatus* status);
using CreateCustomOpDomainFn = OrtStatus* (*)(const char* domain, OrtCustomOpDomain** out);
using CustomOpDomainAddFn = OrtStatus* (*)(OrtCustomOpDomain* domain, const OrtCustomOp* op);
using AddCustomOpDomainFn = OrtStatus* (*)(OrtSessionOptions* options, OrtCustomOpDomain* domain);
using GetTensorMutableDataFn = OrtStatus* (*)(OrtValue* value, void** out);
using GetTensorElementTypeFn = OrtStatus* (*)(const OrtTensorTypeAndShapeInfo* info, int* out);
using GetDimensionsCountFn = OrtStatus* (*)(const OrtTensorTypeAndShapeInfo* info, size_t* out);
using GetDimensionsFn = OrtStatus* (*)(const OrtTensorTypeAndShapeInfo* info, int64_t* dims, size_t count);
using GetTensorTypeAndShapeFn = OrtStatus* (*)(const OrtValue* value, OrtTensorTypeAndShapeInfo** out);
using KernelInfoGetAttributeFloatFn = OrtStatus* (*)(const OrtKernelInfo* info, const char* name, float* out);
using KernelInfoGetAttributeInt64Fn = OrtStatus* (*)(const OrtKernelInfo* info, const char* name, int64_t* out);
using KernelContextGetInputCountFn = OrtStatus* (*)(const OrtKernelContext* context, size_t* out);
using KernelContextGetInputFn = OrtStatus* (*)(const OrtKernelContext* context, size_t index, const OrtValue** out);
using KernelContextGetOutputFn = OrtStatus* (*)(OrtKernelContext* context, size_t index, const int64_t* dims,
                                                size_t count, OrtValue** out);
using ReleaseStatusFn = void (*)(OrtStatus* status);
using ReleaseTensorTypeAndShapeInfoFn = void (*)(OrtTensorTypeAndShapeInfo* info);
using ParallelForFn = OrtStatus* (*)(const OrtKernelContext* context, void (*fn)(void*, size_t), size_t total,
                                     size_t num_batch, void* user_data);

// The function at `entry` of the OrtApi table `api`, as type F.
template <typename F>
inline F fn(const void* api, Entry entry) {
  return reinterpret_cast<F>(static_cast<void* const*>(api)[entry]);
}

}  // namespace ort_abi
