"""Triton kernels for the quantized layers' CUDA paths (the CPU paths are the references).

- `w8a8`: per-token int8 activation quantization + int8 GEMM (B stored K-major [N, K]) with
  the per-token and per-channel scales and the bias fused into the epilogue;
- `w4a16`: 4-bit group-wise weight x fp16/bf16 activation GEMM with split-K for small M;
- `codebook`: 2-/4-bit scalar-codebook GEMV for small batches.

Importing a submodule imports triton. Tests run them on CPU tensors under the Triton
interpreter (TRITON_INTERPRET=1 set before the submodule is imported); every launcher takes
a fixed `config` (no autotuning, which the interpreter cannot run).
"""
