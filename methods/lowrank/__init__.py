"""The low-rank family: truncated SVD of Linear layers (plain, Fisher-weighted, activation-aware;
ranks by energy, parameter budget or validation sensitivity) and Tucker-2 of Conv2d layers (ranks
by FLOP budget, energy or VBMF), each factorised layer kept only where it is smaller and not
measured slower than the dense one.

`configs` (torch-free configs) and `plugins` (the registered methods); the factorisations,
factor modules and the fused Triton kernel load when a method runs."""
from slimbench.methods.lowrank import plugins  # noqa: F401
