"""Torch-free constants and checks shared by method configs of every family.

They live apart from the layers so that registering methods (and `slimbench list`) imports no
torch: configs validate themselves with these alone.
"""
from __future__ import annotations

from typing import Literal

from slimbench.core.config import ConfigError

# Bit-widths the storage helpers can pack into whole bytes (`storage.pack`).
PACKABLE_BITS = (2, 3, 4, 8)

# Layers kept in full precision / dense by default: the two ends of the network, which are the most
# sensitive to compression and hold a tiny share of the weights. Names are fnmatch patterns
# over qualified module names; `*` also spans dots. The suite wraps task models (timm models
# as `net.`, transformers as `model.`), hence the prefixed forms. Embeddings are not
# Linear/Conv2d, so they are never selected and need no pattern.
HEAD_SKIP: tuple[str, ...] = ("fc", "*.fc", "head", "head.*", "*.head", "*.head.*", "*classifier*")
# The stem conv (its fan-in is a few pixels x 1-3 channels). `*.conv1` would also hit every
# ResNet block's conv1, so the ResNet stem is matched at the top level and under the wrapper.
STEM_SKIP: tuple[str, ...] = ("conv1", "conv1.0", "net.conv1", "net.conv1.0", "*conv_stem*", "stem.*", "*.stem.*")
DEFAULT_SKIP: tuple[str, ...] = HEAD_SKIP + STEM_SKIP

SKIP_HELP = ("fnmatch patterns of layers kept in full precision, ';'-separated; the default keeps the "
             "classifier head (fc, head, *classifier*) and the stem conv (conv1 / conv1.0 of a ResNet, "
             "stem.*, conv_stem), with or without the suite's `net.` / `model.` wrapper prefix; "
             "embeddings are never quantized")

BN_HELP = ("re-estimate BatchNorm running statistics on the calibration set after compressing (no weight is "
           "trained); a no-op for models without BatchNorm")

Compute = Literal["auto", "fp32", "fp16", "bf16"]
COMPUTE_HELP = ("activation dtype the compressed model runs in: auto = fp16 on CUDA (what the GPU kernels "
                "take; unquantized layers are cast too, as in the `half` row), fp32 on CPU (the reference "
                "path); recorded per run as compute_dtype")


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def require_divides(owner: str, layer: str, what: str, size: int, extent: int, extent_name: str = "in_features",
                    hint: str = "") -> None:
    """Raise a ConfigError naming the layer, the size and the sizes that would work."""
    if size >= 1 and extent % size == 0:
        return
    divs = divisors(extent)
    shown = ", ".join(map(str, divs if len(divs) <= 24 else divs[:12] + ["..."] + divs[-4:]))
    raise ConfigError(f"{owner}: {what}={size} does not divide {extent_name}={extent} of layer {layer!r}; "
                      f"valid values for this layer: {shown}{hint}")
