"""Quantization methods with honest (bit-packed) storage: `quant.minmax` (weight-only min-max),
`quant.w8a8` (int8 weights and activations) and `quant.kmeans` (codebooks). Triton kernels for
the CUDA paths live in `kernels/` and are imported only when a layer runs on a GPU."""
from slimbench.methods.quant import kmeans, linear, w8a8  # noqa: F401
