"""The low-rank family's Triton kernel (fused two-factor linear)."""
