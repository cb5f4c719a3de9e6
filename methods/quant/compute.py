"""The dtype a quantized model computes in, per device (`compute=` on the quantization configs).

Why: the GPU kernels take fp16/bf16 activations (W4A16, codebook) or write the activation
dtype (W8A8), but tasks feed fp32. Left in fp32 on CUDA, a weight-only layer would dequantize
and call cuBLAS in fp32, so a CUDA row would time a path nobody deploys. `auto` therefore runs
CUDA in fp16 (inputs cast in, logits cast back to fp32, unquantized layers cast to fp16, as the
`half` reference row does) and keeps the CPU reference path in fp32. Packed layers keep their
storage dtypes (fp16 scales, fp32 int8 scales): those are the format, not the compute dtype.

Importing this module costs no torch; the wrapping helpers import it when a method runs.
"""
from __future__ import annotations

from typing import Any, Literal

Compute = Literal["auto", "fp32", "fp16", "bf16"]
COMPUTE_HELP = ("activation dtype the compressed model runs in: auto = fp16 on CUDA (what the GPU kernels "
                "take; unquantized layers are cast too, as in the `half` row), fp32 on CPU (the reference "
                "path); recorded per run as compute_dtype")
_TORCH_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def resolve(compute: str, device: Any) -> str:
    """`auto` -> fp16 on CUDA, fp32 elsewhere; explicit choices pass through."""
    if compute != "auto":
        return compute
    return "fp16" if str(device).startswith("cuda") else "fp32"


def wrap(model, compute: str, device: Any):
    """The compressed `model`, wrapped to run in the resolved dtype (unchanged for fp32)."""
    return _wrap(model, _TORCH_NAMES[resolve(compute, device)])


def unwrap(model) -> tuple[Any, str]:
    """(the quantized model inside, its compute dtype name) for artifact metadata."""
    from slimbench.methods.reference.layers import CastInputs
    if isinstance(model, CastInputs):
        return model.model, str(model.dtype).removeprefix("torch.")
    return model, "float32"


def rewrap(model, meta: dict):
    """Restore-time twin of `wrap`: the dtype comes from the artifact, not the current device."""
    return _wrap(model, meta.get("compute_dtype", "float32"))


def _wrap(model, dtype_name: str):
    if dtype_name == "float32":
        return model
    import torch

    from slimbench.methods.quant.common import PackedStorage
    from slimbench.methods.reference.layers import CastInputs
    return CastInputs(model, getattr(torch, dtype_name), keep=PackedStorage)
