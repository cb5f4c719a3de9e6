"""Triton kernels for the quantized layers' CUDA paths (the CPU paths are the references).

- `w8a8`: per-token int8 activation quantization + int8 GEMM (B stored K-major [N, K]) with
  the per-token and per-channel scales and the bias fused into the epilogue; a plain tiled
  kernel and a persistent one that moves tiles with TMA descriptors (Hopper);
- `w4a16`: 4-bit group-wise weight x fp16/bf16 activation: a tensor-core `dot` kernel (any M,
  optional split-K) and a single-launch CUDA-core `gemv` for M = 1, both decoding nibbles with
  the fp16 magic number;
- `codebook`: 2-/4-bit scalar-codebook products for small batches: per-row, lane-parallel
  (`lanes`, M <= 4) and tensor-core (`dot`) kernels, decoding by table gather or, for 2 bits,
  by selecting among the 4 centroids held in registers.

Importing a submodule imports triton. Tests run them on CPU tensors under the Triton
interpreter (TRITON_INTERPRET=1 set before the submodule is imported); every launcher takes
a fixed `config` (no autotuning, which the interpreter cannot run). Inline-PTX decodes
(`asm=True`, the GPU default) cannot run in the interpreter: CI checks their Triton spelling,
and `benchmarks/quant_kernels.py` checks both against torch on the GPU before timing.
"""
