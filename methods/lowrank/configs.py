"""Configs of the low-rank methods: typed, torch-free, each checked by `MethodConfig`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from slimbench.core.config import MethodConfig, check, setting
from slimbench.methods.common.options import COMPUTE_HELP, DEFAULT_SKIP, Compute

SKIP_HELP = ("fnmatch patterns of layers left dense, ';'-separated; the default keeps the classifier head and the "
             "stem conv")
SLOWER_HELP = ("time each factorised layer against its dense original on the run's device and compute dtype (at "
               "the first calibration batch's shape) and keep the dense one where the factors run more than 5% "
               "slower, or where the dense layer takes under 0.05 ms (launch-bound: a second call cannot pay); off: "
               "only the size check applies (a factorised layer that is not smaller always stays dense)")


@dataclass(frozen=True)
class FactorConfig(MethodConfig):
    """What every low-rank method shares: which layers, fine-tuning, the dense fallback."""

    finetune: bool = setting(True, "fine-tune the factorised model (both factors) for the task's budget afterwards")
    dense_if_slower: bool = setting(True, SLOWER_HELP)
    compute: Compute = setting("auto", COMPUTE_HELP)
    skip: tuple[str, ...] = setting(DEFAULT_SKIP, SKIP_HELP)


@dataclass(frozen=True)
class SVDConfig(FactorConfig):
    """Truncated SVD of nn.Linear weights, W ~ U V, stored and run as the two factors."""

    rank_by: Literal["params", "energy", "sensitivity"] = setting(
        "params", "params: every layer keeps `params` of its parameters (rank = params * in * out / (in + out)); "
                  "energy: the smallest rank holding `energy` of the (weighted) squared singular values; "
                  "sensitivity: per-layer ranks from a validation scan, under the `params` budget overall")
    params: float = setting(0.5, "fraction of the selected layers' parameters the factors may hold", gt=0, le=1)
    energy: float = setting(0.9, "rank_by=energy: fraction of the spectrum's energy kept, in (0, 1]", gt=0, le=1)
    weighting: Literal["plain", "fisher", "activation"] = setting(
        "fisher", "plain: SVD of W; fisher (FWSVD): rows weighted by the square root of their summed empirical "
                  "Fisher information (gradients of training batches); activation (ASVD): input columns scaled "
                  "by mean |x|^alpha over the calibration set; the truncation then minimises the weighted error")
    alpha: float = setting(0.5, "activation weighting: the exponent of mean |x|", gt=0, le=2)
    grad_batches: int = setting(8, "fisher: training batches the squared gradients are summed over", ge=1)
    levels: tuple[float, ...] = setting((0.25, 0.5, 0.75), "sensitivity: parameter fractions each layer is scanned "
                                        "at, ';'-separated", gt=0, le=1)
    scan_examples: int = setting(128, "sensitivity: validation examples each scan point is scored on", ge=1)
    per_layer: dict[str, int] = setting(
        help="fixed ranks (fnmatch pattern -> rank, 1..min(in, out)) overriding the rule for the layers they name; "
             "each pattern must name a selected layer (give it in a config file or as JSON)",
        default_factory=dict)
    kernel: Literal["auto", "torch", "fused"] = setting(
        "auto", "how a factorised layer runs: torch (two matmuls, x V^T then U^T), fused (one Triton kernel, "
                "the rank-r intermediate kept on chip; CUDA), auto: fused on CUDA, torch elsewhere")

    def validate(self) -> None:
        for pattern, r in self.per_layer.items():
            check(r >= 1, f"per_layer[{pattern!r}]={r}: a rank must be >= 1")
        check(len(self.levels) >= 1, "levels is empty; give at least one fraction, e.g. 0.25;0.5")


@dataclass(frozen=True)
class TuckerConfig(FactorConfig):
    """Tucker-2 of kxk nn.Conv2d weights: a 1x1 conv into r_in channels, a kxk core conv to r_out, a
    1x1 conv back out (1x1 and grouped convs stay dense)."""

    rank_by: Literal["flops", "energy", "vbmf"] = setting(
        "flops", "flops: both ranks the same fraction of their channels, the largest whose three convs cost at "
                 "most `flops` of the original; energy: per mode, the smallest rank holding `energy` of the "
                 "unfolding's squared singular values; vbmf: per mode, the rank empirical variational Bayes "
                 "matrix factorisation selects (Nakajima et al. 2013)")
    flops: float = setting(0.4, "rank_by=flops: fraction of each factorised conv's FLOPs kept", gt=0, le=1)
    energy: float = setting(0.9, "rank_by=energy: fraction of each mode's energy kept, in (0, 1]", gt=0, le=1)
