"""Quantization methods with honest (bit-packed) storage: `quant.minmax` (weight-only min-max),
`quant.w8a8` (int8 weights and activations), `quant.kmeans` (codebooks), `quant.gptq`
(second-order PTQ), `quant.qat` and `quant.progressive` (trained, then packed), `quant.fp8` (FP8 W8A8 on Hopper-class GPUs) and `torch.static_int8`
(PyTorch's eager static int8, a reference row).

Importing the package registers the methods without importing torch (`methods`); the
layers (`linear`, `kmeans`, `w8a8`), `packing` and the Triton kernels in `kernels/` load
when a method runs (kernels only when a layer runs on a GPU)."""
from slimbench.methods.quant import methods, methods_ptq, methods_train  # noqa: F401
