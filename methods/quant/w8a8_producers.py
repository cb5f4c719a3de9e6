"""Opt-in: a W8A8 BERT's LayerNorm -> Q|K|V and LayerNorm -> FFN-up paths on the fused producers.

Why: per layer, dynamic W8A8 quantizes the QKV input three times (once per Linear) and the
FFN-up input once, each a pass over the activation after the LayerNorm's own pass and the
residual add's. `fuse_bert_producers(model)` makes each LayerNorm (after its residual add)
write the int8 codes and per-token scales in the same kernel (`kernels.fused_producers`),
runs Q, K and V as one int8 GEMM on those codes, and lets FFN-up take them as they are.

Applied to a loaded model, at prepare time: every replacement keeps the original's parameters
and buffers under the same names (the stacked QKV weights are non-persistent buffers, derived
here), so `state_dict()` and the artifact are unchanged. Only per-token symmetric W8A8 Linears
(`quant.w8a8`, the default) take part: a static scale would not match the per-token codes.
The codes travel on the LayerNorm's output tensor (`_slim_q`); a reader that makes a new tensor
simply quantizes again. Inference only (no autograd through the kernels); on CPU tensors the
torch reference runs unless `kernel=True` (the Triton interpreter, in tests).
"""
from __future__ import annotations

import torch
from torch import nn

from slimbench.methods.common.layers import replace_module
from slimbench.methods.quant.w8a8 import W8A8Linear, act_dtype, int8_matmul, quantize_per_token, quantize_static


def _use_kernel(flag: bool | None, x: torch.Tensor) -> bool:
    return (x.is_cuda if flag is None else flag) and not (torch.is_grad_enabled() and x.requires_grad)


class ProducerLayerNorm(nn.LayerNorm):
    """nn.LayerNorm (same state) computing LayerNorm(x + residual) in one kernel that also
    writes the per-token int8 codes of its output, attached to it as `_slim_q` = (q, scale)."""

    kernel: bool | None = None

    @classmethod
    def from_layernorm(cls, ln: nn.LayerNorm, kernel: bool | None = None) -> "ProducerLayerNorm":
        new = cls(ln.normalized_shape, ln.eps, ln.elementwise_affine, bias=ln.bias is not None,
                  device=ln.weight.device if ln.weight is not None else None,
                  dtype=ln.weight.dtype if ln.weight is not None else None)
        new.load_state_dict(ln.state_dict())
        new.kernel = kernel
        return new

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if len(self.normalized_shape) != 1 or not _use_kernel(self.kernel, x) or (
                self.weight is not None and self.weight.requires_grad and torch.is_grad_enabled()):
            return super().forward(x if residual is None else x + residual)
        from slimbench.methods.quant.kernels.fused_producers import layernorm_quant

        y, q, s = layernorm_quant(x, self.weight, self.bias, self.eps, residual)
        y._slim_q = (q, s)
        return y


class ResidualLayerNormOutput(nn.Module):
    """HF BERT's BertSelfOutput / BertOutput (dense -> dropout -> LayerNorm(h + input_tensor)),
    same children and state, with the residual add inside the producer LayerNorm's kernel."""

    def __init__(self, block: nn.Module, kernel: bool | None = None):
        super().__init__()
        self.dense, self.dropout = block.dense, block.dropout
        self.LayerNorm = ProducerLayerNorm.from_layernorm(block.LayerNorm, kernel)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)), input_tensor)


def _gemm(x2: torch.Tensor, codes, weight, weight_scale, bias, input_scale, sizes, kernel: bool):
    """The stacked layers on x2 [M, K] (codes: the producer's (q, s) or None) -> one output per layer.
    The reference path is `W8A8Base.gemm`'s CPU path, column for column."""
    if kernel:
        from slimbench.methods.quant.kernels.fused_producers import FusedWeights, fused_linear

        return fused_linear(x2, FusedWeights(weight, weight_scale, bias, sizes, input_scale), codes)
    if codes is not None:
        q, s = codes
    else:
        q, s = quantize_static(x2, input_scale) if input_scale is not None else quantize_per_token(x2)
    y = int8_matmul(q, weight).to(torch.float32).mul_(s[:, None]).mul_(weight_scale)
    return (y if bias is None else y.add_(bias)).split(list(sizes), dim=-1)


def _codes(x: torch.Tensor, x2: torch.Tensor, input_scale):
    """The producer's codes if they fit this input and these layers (per-token, same rows)."""
    codes = getattr(x, "_slim_q", None)
    if codes is None or input_scale is not None or codes[0].shape != x2.shape:
        return None
    return codes


class StackedW8A8(nn.Module):
    """W8A8 Linears that read one input (Q, K, V) as one GEMM: the stacked weights are
    non-persistent buffers built here from the layers' own, never saved. The slots (the
    layers, now `W8A8Slot`) call `outputs(x, i)`: the first call for an input runs the GEMM,
    the others take their views of the same output; the cache is dropped when all have."""

    def __init__(self, layers: list[W8A8Linear], kernel: bool | None = None):
        super().__init__()
        from slimbench.methods.quant.kernels.fused_producers import fuse_w8a8_weights

        fw = fuse_w8a8_weights(layers)
        self.register_buffer("weight", fw.weight, persistent=False)
        self.register_buffer("weight_scale", fw.weight_scale, persistent=False)
        self.register_buffer("bias", fw.bias, persistent=False)
        self.register_buffer("input_scale", fw.input_scale, persistent=False)
        self.sizes, self.kernel = fw.sizes, kernel
        self._pending: tuple | None = None  # (input, outputs, slots not yet served)

    def outputs(self, x: torch.Tensor, slot: int) -> torch.Tensor:
        if self._pending is None or self._pending[0] is not x:
            x2 = x.reshape(-1, self.weight.shape[1])
            outs = _gemm(x2, _codes(x, x2, self.input_scale), self.weight, self.weight_scale, self.bias,
                         self.input_scale, self.sizes, _use_kernel(self.kernel, x))
            self._pending = (x, outs, set(range(len(self.sizes))))
        _, outs, left = self._pending
        left.discard(slot)
        if not left:
            self._pending = None
        return outs[slot]

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, in_features={self.weight.shape[1]}"


class W8A8Slot(W8A8Linear):
    """A per-token W8A8Linear (same buffers and state) that takes a producer's int8 codes, and
    with a `StackedW8A8` group runs as its `index`-th slice of the group's one GEMM."""

    def __init__(self, layer: W8A8Linear, group: StackedW8A8 | None = None, index: int = 0,
                 kernel: bool | None = None):
        super().__init__(layer.in_features, layer.out_features, layer.bias is not None, layer.static, layer.symmetric)
        self._buffers.update(layer._buffers)  # the layer's own tensors (device, dtype and all): it is replaced
        self._group = (group,)  # a tuple: not registered as a child (the parent owns the group)
        self.index, self.kernel = index, kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.int8:
            return super().forward(x)
        group = self._group[0]
        if group is not None:
            y = group.outputs(x, self.index)
        else:
            x2 = x.reshape(-1, self.in_features)
            scale = self.input_scale if self.static else None
            (y,) = _gemm(x2, _codes(x, x2, scale), self.weight, self.weight_scale.float(), self.bias, scale,
                         (self.out_features,), _use_kernel(self.kernel, x))
        return y.to(act_dtype(x)).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", slot={self.index} of a stacked GEMM" if self._group[0] is not None else "")


def _per_token(layer) -> bool:
    return type(layer) is W8A8Linear and not layer.static and layer.symmetric


def fuse_bert_producers(model: nn.Module, kernel: bool | None = None) -> dict[str, list[str]]:
    """Rewrite, in place, each HF BERT layer of `model` (duck-typed: `attention.self.{query,key,
    value}`, `attention.output`, `intermediate.dense`, `output`) and each embeddings LayerNorm:
    LayerNorms become producers (residual add included), per-token W8A8 Q/K/V one stacked GEMM,
    a per-token W8A8 FFN-up a consumer of the codes. Layers that do not qualify are left as they
    are and named in the returned report under "kept"."""
    report: dict[str, list[str]] = {"producers": [], "qkv": [], "ffn_up": [], "kept": []}
    mods = dict(model.named_modules())
    for name, mod in mods.items():
        prefix = f"{name}." if name else ""
        if isinstance(getattr(mod, "word_embeddings", None), nn.Embedding) and isinstance(
                getattr(mod, "LayerNorm", None), nn.LayerNorm) and type(mod.LayerNorm) is nn.LayerNorm:
            mod.LayerNorm = ProducerLayerNorm.from_layernorm(mod.LayerNorm, kernel)
            report["producers"].append(f"{prefix}LayerNorm")
        attn = getattr(getattr(mod, "attention", None), "self", None)
        if attn is None or not all(hasattr(mod, a) for a in ("intermediate", "output")):
            continue
        for block in (f"{prefix}attention.output", f"{prefix}output"):
            old = mods[block]
            if all(isinstance(getattr(old, c, None), nn.Module) for c in ("dense", "dropout", "LayerNorm")):
                replace_module(model, block, ResidualLayerNormOutput(old, kernel))
                report["producers"].append(f"{block}.LayerNorm")
        qkv = [getattr(attn, p, None) for p in ("query", "key", "value")]
        if all(_per_token(lay) for lay in qkv):
            group = StackedW8A8(qkv, kernel).to(qkv[0].weight.device)
            attn.slim_qkv = group
            for i, p in enumerate(("query", "key", "value")):
                setattr(attn, p, W8A8Slot(qkv[i], group, i, kernel))
            report["qkv"].append(f"{prefix}attention.self")
        else:
            report["kept"].append(f"{prefix}attention.self: Q/K/V are not all per-token symmetric W8A8Linear")
        up = getattr(mod.intermediate, "dense", None)
        if _per_token(up):
            mod.intermediate.dense = W8A8Slot(up, None, 0, kernel)
            report["ffn_up"].append(f"{prefix}intermediate.dense")
        else:
            report["kept"].append(f"{prefix}intermediate.dense: {type(up).__name__}, not a per-token W8A8Linear")
    if not report["producers"]:
        raise ValueError("fuse_bert_producers: no BERT-style layer (attention.self.query/key/value, "
                         "attention.output, intermediate, output) found in this model")
    return report
