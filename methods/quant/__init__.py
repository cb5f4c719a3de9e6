"""Quantization methods with honest (bit-packed) storage: `quant.minmax` (weight-only min-max),
`quant.w8a8` (int8 weights and activations) and `quant.kmeans` (codebooks).

Importing the package registers the methods without importing torch (`methods`); the
layers (`linear`, `kmeans`, `w8a8`), `packing` and the Triton kernels in `kernels/` load
when a method runs (kernels only when a layer runs on a GPU)."""
from slimbench.methods.quant import methods  # noqa: F401
