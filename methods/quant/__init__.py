"""The quantization family, with honest (bit-packed) storage.

`configs` (torch-free configs) and `plugins` (the registered methods: `quant.minmax`, `quant.gptq`,
`quant.qat`, `quant.progressive`, `quant.kmeans`, `quant.w8a8`, `quant.fp8`, and PyTorch's own
`torch.dynamic_int8` / `torch.static_int8` reference rows). Importing the package registers the
methods without importing torch; the layers (`linear`, `kmeans`, `w8a8`, `torch_int8`, `fp8`),
the algorithms (`gptq`, `qat`, `progressive`, `w8a8_calib`, `w8a8_fuse`) and the Triton kernels
in `kernels/` load when a method runs (kernels only when a layer runs on a GPU)."""
from slimbench.methods.quant import plugins  # noqa: F401
