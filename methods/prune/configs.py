"""Configs of the pruning methods: typed, torch-free, each checked by `MethodConfig`.

Unstructured methods share `SparseConfig` (which layers, how the sparse weights are stored and
run, the fine-tuning that follows); `prune.structured` and `prune.nm` have their own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from slimbench.core.config import MethodConfig, check, setting
from slimbench.methods.common.options import BN_HELP, DEFAULT_SKIP

PRUNE_SKIP_HELP = ("fnmatch patterns of layers left dense, ';'-separated; the default keeps the classifier head and "
                   "the stem conv (as the quantization methods do); embeddings and norms are never pruned")
SPARSITY_HELP = ("fraction of the selected layers' weights removed, overall, in [0, 1); layers named in per_layer "
                 "take their own sparsity and the others make up the difference")
STORAGE_HELP = ("how the sparse weights are stored: bitmask (1 bit per position + the nonzero values), csr (values "
                "+ column indices + row pointers) or, for block pruning, bsr (the nonzero blocks + their block "
                "indices); auto: bsr when pruning blocks, else bitmask. The size includes the index bytes, and the "
                "run records when dense storage would have been smaller")
KERNEL_HELP = ("how a sparse layer runs: dense (weights expanded once at load, then the stock dense op), csr "
               "(torch's CSR sparse matmul on the stored values; Linear layers only) or auto (per Linear layer, "
               "whichever of the two was faster when timed on the compress device at the task's latency batch "
               "sizes; the choice is stored with the artifact and recorded)")


@dataclass(frozen=True)
class SparseConfig(MethodConfig):
    """Unstructured sparsity in nn.Linear / nn.Conv2d weights, stored sparse."""

    sparsity: float = setting(0.5, SPARSITY_HELP, ge=0, lt=1)
    finetune: bool = setting(True, "fine-tune for the task's budget afterwards, pruned weights held at zero")
    storage: Literal["auto", "bitmask", "csr", "bsr"] = setting("auto", STORAGE_HELP)
    kernel: Literal["auto", "dense", "csr"] = setting("auto", KERNEL_HELP)
    recalibrate_bn: bool = setting(False, BN_HELP)
    skip: tuple[str, ...] = setting(DEFAULT_SKIP, PRUNE_SKIP_HELP)
    per_layer: dict[str, float] = setting(
        help="sparsity per layer (fnmatch pattern -> sparsity) overriding the uniform/global allocation; each "
             "pattern must name at least one selected layer (give it in a config file or as JSON)",
        default_factory=dict)

    def validate(self) -> None:
        for pattern, s in self.per_layer.items():
            check(0 <= s < 1, f"per_layer[{pattern!r}]={s} must be in [0, 1)")
        check(self.storage != "bsr" or self.block > 1, "storage=bsr stores whole blocks: it needs block > 1 "
                                                       "(prune.magnitude:block=32)")

    block: ClassVar[int] = 1  # element-wise; prune.magnitude can prune whole blocks

    @property
    def storage_kind(self) -> str:
        """The storage actually used (`auto` resolved)."""
        if self.storage == "auto":
            return "bsr" if self.block > 1 else "bitmask"
        return self.storage


@dataclass(frozen=True)
class MagnitudeConfig(SparseConfig):
    scope: Literal["layer", "global"] = setting(
        "global", "layer: every layer pruned to `sparsity`; global: one magnitude threshold over all selected layers")
    schedule: Literal["oneshot", "gradual"] = setting(
        "oneshot", "oneshot: prune, then fine-tune; gradual: sparsity follows a cubic ramp from 0 to `sparsity` over "
                   "the first 75% of the fine-tuning budget (Zhu & Gupta), masks held in between")
    update_every: int = setting(5, "gradual: steps between mask updates", ge=1)
    block: int = setting(1, "1: single weights; 16, 32 or 64: whole BxB blocks of nn.Linear weights, scored by their "
                            "L2 norm and stored bsr (the block-sparse GPU kernel runs them); Linear layers whose "
                            "shape B does not divide, and convs, stay dense (recorded with the run)",
                         choices=(1, 16, 32, 64))

    def validate(self) -> None:
        super().validate()
        check(self.schedule == "oneshot" or self.finetune, "schedule=gradual prunes during fine-tuning: it needs "
                                                           "finetune=true")
        check(self.block == 1 or self.schedule == "oneshot", f"block={self.block} prunes one-shot: use "
                                                             "schedule=oneshot")
        check(self.block == 1 or self.storage in ("auto", "bsr"), f"block={self.block} is stored as blocks: use "
                                                                  "storage=bsr (or auto)")


@dataclass(frozen=True)
class RandomConfig(SparseConfig):
    """The control: the same per-layer sparsities as magnitude pruning would choose, random positions."""

    scope: Literal["layer", "global"] = setting(
        "global", "whose per-layer sparsities to copy: uniform (layer) or what a global magnitude threshold gives")


@dataclass(frozen=True)
class SensitivityConfig(SparseConfig):
    saliency: Literal["magnitude", "taylor", "fisher"] = setting(
        "fisher", "which weights go first: magnitude |w|; taylor: first order |w * dL/dw|; fisher: second order, "
                  "OBD with the diagonal empirical Fisher as the Hessian, w^2 * E[g^2] / 2 (gradients from training "
                  "batches)")
    levels: tuple[float, ...] = setting((0.5, 0.75, 0.9), "sparsities each layer is scanned at, ';'-separated "
                                                          "(the scan costs layers x levels evaluations)", ge=0, lt=1)
    scan_examples: int = setting(128, "validation examples each scan point is scored on (rotten-tomatoes' 37 layers "
                                      "x 3 levels x 128 examples: about 1.5 min on 2 CPU cores)", ge=1)
    grad_batches: int = setting(8, "training batches the taylor/fisher gradients are averaged over", ge=1)

    def validate(self) -> None:
        super().validate()
        check(len(self.levels) >= 1, "levels is empty; give at least one sparsity, e.g. 0.5;0.9")


@dataclass(frozen=True)
class L1Config(SparseConfig):
    penalty: Literal["l1", "group"] = setting(
        "l1", "l1: lambda * sum |w| (unstructured); group: group lasso, lambda * sum over output rows of ||w_row||_2 "
              "(rows whose norm falls to zero are pruned whole)")
    strength: float = setting(1e-4, "lambda, per weight (l1) or per row (group), added to the task loss", ge=0)

    def validate(self) -> None:
        super().validate()
        check(self.finetune, "prune.l1 trains with the penalty: it needs finetune=true")
        check(self.penalty != "group" or not self.per_layer,
              f"penalty=group prunes whole rows by one global threshold and cannot take per_layer="
              f"{dict(self.per_layer)}; use penalty=l1 or drop per_layer")


@dataclass(frozen=True)
class StructuredConfig(MethodConfig):
    ratio: float = setting(0.3, "fraction removed: of the output channels of every prunable conv group (CNN), or of "
                                "the attention heads and FFN neurons of every layer (transformer); 0.3 of the "
                                "channels is about 2x fewer FLOPs", ge=0, lt=1)
    criterion: Literal["l1", "taylor"] = setting(
        "l1", "l1: norm of the weights of each channel / head / neuron; taylor: |w * dL/dw| summed over them "
              "(gradients from training batches)")
    finetune: bool = setting(True, "fine-tune the smaller model for the task's budget afterwards")
    skip: tuple[str, ...] = setting(DEFAULT_SKIP, "fnmatch patterns of layers whose outputs keep all channels "
                                                  "(the classifier head by default)")
    grad_batches: int = setting(8, "training batches the taylor gradients are averaged over", ge=1)
    round_to: int = setting(8, "channel and FFN-neuron counts are kept multiples of this (vector units and tensor "
                               "cores want them; a 22-channel conv can run slower than a 32-channel one), so the "
                               "ratio removed is approximate; 1: exact", ge=1)


@dataclass(frozen=True)
class NMConfig(MethodConfig):
    n: int = setting(2, "weights kept in every group of m consecutive inputs", ge=1)
    m: int = setting(4, "group size (2:4 is what sparse tensor cores run)", choices=(2, 4, 8, 16))
    finetune: bool = setting(True, "fine-tune for the task's budget afterwards, the N:M pattern held")
    skip: tuple[str, ...] = setting(DEFAULT_SKIP, PRUNE_SKIP_HELP)

    def validate(self) -> None:
        check(self.n < self.m, f"n={self.n} must be smaller than m={self.m}")
