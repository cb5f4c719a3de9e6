"""Codebook quantization layers for `quant.kmeans` (method: `plugins.KMeans`): one k-means
codebook per layer, `CodebookLinear` and `CodebookConv2d`.

Every `dim` consecutive input weights of a row (a conv's weight viewed as [out,
in/groups*kh*kw]) form a vector (`dim=1`: scalar codebook)
that is replaced by the index of its nearest centroid among 2**bits. The artifact holds
the indices bit-packed at `bits` bits and the fp16 codebook, so a layer costs
bits/dim bits per weight plus 2**bits * dim * 2 bytes. Centroids come from a few Lloyd
iterations (deterministic: quantile init for scalars, seeded sampling for vectors) and
can then be fine-tuned on the task with the shared trainer while the indices stay fixed.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import nn

from slimbench.methods.common import storage as packing
from slimbench.methods.common.layers import REFERENCE, WEIGHT_LAYERS, fan_in, fan_in_name, swap_named, targets
from slimbench.methods.common.options import require_divides
from slimbench.methods.quant.dequant import DequantConv, DequantLinear

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.base import CompressionContext
    from slimbench.methods.quant.configs import KMeansConfig

_HALF = (torch.float16, torch.bfloat16)


def _assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """Nearest-centroid index of each row of x [n, d] (chunked to bound memory)."""
    if x.shape[1] == 1:  # scalar: sorted centroids + midpoints -> bucketize, O(n log k)
        order = torch.argsort(centroids[:, 0])
        c = centroids[order, 0]
        return order[torch.bucketize(x[:, 0], (c[1:] + c[:-1]) / 2)]
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    c2 = centroids.pow(2).sum(1)
    for i in range(0, x.shape[0], chunk):
        xs = x[i:i + chunk]
        out[i:i + chunk] = (c2[None, :] - 2 * xs @ centroids.t()).argmin(1)
    return out


def kmeans(x: torch.Tensor, k: int, iters: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's algorithm on x [n, d] -> (centroids [k, d] fp32, assignment [n]).

    Scalars start at the (i + 0.5)/k quantiles, so every centroid begins inside the data;
    vectors start at k distinct points drawn with `seed`. An emptied cluster keeps its centroid.
    """
    x = x.float()
    n, d = x.shape
    if d == 1:
        probs = (torch.arange(k, dtype=torch.float64) + 0.5) / k
        sample = x[:, 0] if n <= 1 << 24 else x[torch.linspace(0, n - 1, 1 << 24).long(), 0]
        cent = torch.quantile(sample.double().cpu(), probs).float().to(x.device)[:, None]
    else:
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(n, generator=gen)[:k].to(x.device)
        cent = x[idx].clone()
        if k > n:
            cent = torch.cat([cent, cent[torch.arange(k - n) % n]])
    assign = _assign(x, cent)
    for _ in range(iters):
        sums = torch.zeros_like(cent).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        cent = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], cent)
        new = _assign(x, cent)
        if torch.equal(new, assign):
            break
        assign = new
    return cent, assign


class CodebookLinear(DequantLinear):
    """Buffers: `codes` uint8 [out, packed_len(in/dim, bits)]; parameter `codebook` fp16
    [2**bits, dim] (a frozen parameter so codebook fine-tuning can train it); `bias`."""

    def __init__(self, in_features: int, out_features: int, bias: bool, bits: int, dim: int):
        super().__init__()
        self.in_features, self.out_features, self.bits, self.dim = in_features, out_features, bits, dim
        self.register_buffer("codes", torch.zeros(out_features, packing.packed_len(in_features // dim, bits),
                                                  dtype=torch.uint8))
        self.codebook = nn.Parameter(torch.zeros(2 ** bits, dim, dtype=torch.float16), requires_grad=False)
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(cls, lin: nn.Linear, bits: int, dim: int, iters: int, seed: int) -> "CodebookLinear":
        q = cls(lin.in_features, lin.out_features, lin.bias is not None, bits, dim)
        return q.fill(lin.weight, lin.bias, iters, seed)

    def fill(self, weight: torch.Tensor, bias: torch.Tensor | None, iters: int, seed: int) -> "CodebookLinear":
        """Fit the codebook to a float weight (any shape with out_features rows) and store the indices."""
        self.to(weight.device)
        w = weight.detach().float().reshape(-1, self.dim)
        cent, _ = kmeans(w, 2 ** self.bits, iters, seed)
        cent16 = cent.half()
        assign = _assign(w, cent16.float())  # final indices against the codebook actually stored
        self.codes.copy_(packing.pack(assign.reshape(self.out_features, -1), self.bits))
        self.codebook.data.copy_(cent16)
        if bias is not None:
            self.bias = bias.detach().clone()
        return self

    @property
    def weight_bits(self) -> float:
        return self.bits / self.dim

    def indices(self) -> torch.Tensor:
        return packing.unpack(self.codes, self.bits, self.in_features // self.dim).long()

    def dequantize(self) -> torch.Tensor:
        return self.codebook.float()[self.indices()].reshape(self.out_features, self.in_features)

    def kernel_forward(self, x2: torch.Tensor) -> torch.Tensor | None:
        """Triton codebook GEMV for small batches of x2 [M, K] (None where it does not apply).

        Used for CUDA tensors at inference; tests call it on CPU tensors under the interpreter."""
        if self.dim != 1 or self.bits not in (2, 4) or x2.dtype not in _HALF or x2.shape[0] > 16 \
                or (torch.is_grad_enabled() and self.codebook.requires_grad):
            return None
        from slimbench.methods.quant.kernels import codebook as kern

        return kern.codebook_gemv(x2, self.codes, self.codebook, self.bits, self.bias)

    def kernel_path(self, dtype: torch.dtype) -> str | None:
        if self.dim != 1 or self.bits not in (2, 4) or dtype not in _HALF:
            return None
        # per device, not per batch: the GEMV serves <= 16 rows only, the tasks' batches mostly run the reference
        return f"{REFERENCE}dequantize + dense GEMM (the Triton codebook GEMV only at <= 16 rows)"

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, dim={self.dim}"


class CodebookConv2d(DequantConv, CodebookLinear):
    """A Conv2d stored exactly like a CodebookLinear over its [out, in/groups*kh*kw] weight view;
    the forward looks the weight up then runs `F.conv2d` with the original geometry."""

    def __init__(self, conv: nn.Conv2d, bits: int, dim: int):
        super().__init__(fan_in(conv), conv.out_channels, conv.bias is not None, bits, dim)
        self.init_geometry(conv)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, bits: int, dim: int, iters: int, seed: int) -> "CodebookConv2d":
        return cls(conv, bits, dim).fill(conv.weight, conv.bias, iters, seed)

    def extra_repr(self) -> str:
        return f"{self.conv_repr()}, bits={self.bits}, dim={self.dim}"


def empty_twin(layer: nn.Module, cfg: "KMeansConfig") -> CodebookLinear:
    """The empty codebook layer a restore swaps in for a freshly built one (filled by load_state_dict)."""
    if isinstance(layer, nn.Conv2d):
        return CodebookConv2d(layer, cfg.bits, cfg.dim)
    return CodebookLinear(layer.in_features, layer.out_features, layer.bias is not None, cfg.bits, cfg.dim)


def quantize_model(model: nn.Module, cfg: "KMeansConfig", owner: str, seed: int) -> nn.Module:
    """Swap every eligible Linear / Conv2d for a codebook layer; layer i is clustered with seed + i."""
    layers = targets(model, cfg.skip, owner, WEIGHT_LAYERS)
    for name, layer in layers:
        require_divides(owner, name, "dim", cfg.dim, fan_in(layer), fan_in_name(layer))
    for i, (name, _) in enumerate(layers):
        swap_named(model, [name], lambda _, layer: empty_twin(layer, cfg).fill(layer.weight, layer.bias, cfg.iters,
                                                                            seed + i))
    return model


def finetune_codebooks(model: nn.Module, ctx: "CompressionContext", desc: str, rel_lr: float | None = None) -> None:
    """Train only the centroids (in fp32, stored back as fp16); every other weight is frozen.

    The task's fine-tuning recipe sets steps, schedule, warm-up and weight decay. The peak lr is
    `rel_lr` x the RMS of all centroids (None: the task's lr), since AdamW moves a parameter by about
    lr per step and a task lr sized for whole models barely moves them. The model runs in train
    mode, so BatchNorm running statistics are re-estimated as well (on fashion-mnist that alone
    recovers most of the 2-bit loss, with the centroids held still)."""
    books = [m for m in model.modules() if isinstance(m, CodebookLinear)]
    frozen = {p: p.requires_grad for p in model.parameters()}
    for p in frozen:
        p.requires_grad_(False)
    for m in books:
        m.codebook = nn.Parameter(m.codebook.detach().float(), requires_grad=True)
    try:
        recipe = ctx.recipe()
        if rel_lr is not None and books:
            rms = float(torch.cat([m.codebook.detach().flatten() for m in books]).pow(2).mean().sqrt())
            if rms > 0:
                recipe = dataclasses.replace(recipe, lr=rel_lr * rms)
        ctx.trainer.fit(model, ctx.train_batches(), recipe, ctx.seed, params=[m.codebook for m in books], desc=desc)
    finally:
        for m in books:
            m.codebook = nn.Parameter(m.codebook.detach().half(), requires_grad=False)
        for p, flag in frozen.items():
            p.requires_grad_(flag)
