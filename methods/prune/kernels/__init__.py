"""Triton kernels of the pruning family (imported only when a layer runs on a GPU, or by tests
through the Triton interpreter): `nm` (2:4 weights expanded in registers inside the GEMM) and
`blocksparse` (block-sparse weights, only the nonzero blocks loaded and multiplied)."""
