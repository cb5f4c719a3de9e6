"""Intermediate-feature distillation: what is matched, and the projections that make it matchable.

CNN (FitNets-style hints): the output of each ResNet stage of the student, through a learned 1x1
conv to the teacher's channel count, regresses the teacher's stage output (MSE). Transformer
(TinyBERT/MiniLM-style): student layer i imitates teacher layer layer_map[i], its hidden states by
MSE (through a learned linear map when the widths differ) and its attention maps by KL, per head,
over the keys the padding mask allows. Attention maps are computed from the hooked query/key
projections, so they do not depend on which attention kernel the model runs. A student layer with
another head count than its teacher layer (heads pruned by `prune.structured` before
`distill.feature:student=input`) matches the head-averaged map instead: which teacher head a kept
head was is not recorded, and the average is defined for any count. Likewise every CNN stage has
its own 1x1 projection, so a student whose channels were pruned maps onto the teacher's widths.

The projections train with the student (their own optimizer group) and are discarded after: the
artifact is the student alone.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from slimbench.methods.base import Unsupported
from slimbench.methods.common.children import encoder_layers, resnet_stages


class Taps:
    """Forward hooks that keep the latest output of chosen modules."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.out: dict[str, Any] = {}
        self._handles = [m.register_forward_hook(self._keep(k)) for k, m in modules.items()]

    def _keep(self, key: str) -> Callable:
        def hook(module, inputs, output):
            self.out[key] = output[0] if isinstance(output, tuple) else output
        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def _attention_modules(layers: nn.ModuleList, index: list[int]) -> dict[str, nn.Module]:
    out = {}
    for j, i in enumerate(index):
        att = layers[i].attention.self
        out[f"h{j}"], out[f"q{j}"], out[f"k{j}"] = layers[i], att.query, att.key
    return out


def attention_logprobs(q: torch.Tensor, k: torch.Tensor, heads: int, mask: torch.Tensor | None) -> torch.Tensor:
    """log softmax(Q K^T / sqrt(d)) per head, [B, H, L, L], padded keys at -inf."""
    b, n, width = q.shape
    d = width // heads
    q = q.reshape(b, n, heads, d).transpose(1, 2)
    k = k.reshape(b, n, heads, d).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    if mask is not None:
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
    return F.log_softmax(scores, -1)


class FeatureLoss:
    """The feature term between a student and its teacher; `projections` are its trainable parts."""

    def __init__(self, student: nn.Module, teacher: nn.Module, mapping: list[int], attention: float, owner: str):
        self.attention_weight = attention
        self.projections = nn.ModuleDict()
        s_layers, t_layers = encoder_layers(student), encoder_layers(teacher)
        if s_layers is not None and t_layers is not None:
            self.kind = "transformer"
            self.pairs = len(mapping)
            self.s_taps = Taps(_attention_modules(s_layers, list(range(len(mapping)))))
            self.t_taps = Taps(_attention_modules(t_layers, mapping))
            self.heads = [(s_layers[j].attention.self.num_attention_heads,
                           t_layers[i].attention.self.num_attention_heads) for j, i in enumerate(mapping)]
            self.averaged = [j for j, (h_s, h_t) in enumerate(self.heads) if h_s != h_t]
            s_w = s_layers[0].attention.self.query.in_features
            t_w = t_layers[0].attention.self.query.in_features
            if s_w != t_w:
                self.projections["hidden"] = nn.Linear(s_w, t_w)
            return
        s_st, t_st = resnet_stages(student), resnet_stages(teacher)
        if s_st is None or t_st is None:
            raise Unsupported(f"{owner} matches features of timm ResNet stages or transformers encoder layers; "
                              "this model has neither (use distill.kd)")
        self.kind = "cnn"
        self.pairs = len(s_st)
        self.s_taps = Taps({f"s{i}": m for i, m in enumerate(s_st)})
        self.t_taps = Taps({f"s{i}": m for i, m in enumerate(t_st)})
        for i, (s, t) in enumerate(zip(s_st, t_st)):
            c_s, c_t = _channels(s), _channels(t)
            self.projections[f"s{i}"] = nn.Conv2d(c_s, c_t, 1, bias=False)

    def __call__(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature term, attention term) from the student's and teacher's latest forwards."""
        s, t = self.s_taps.out, self.t_taps.out
        if self.kind == "cnn":
            hint = sum(F.mse_loss(self.projections[f"s{i}"](s[f"s{i}"]), t[f"s{i}"]) for i in range(self.pairs))
            return hint / self.pairs, hint.new_zeros(())
        mask = inputs.get("attention_mask")
        proj = self.projections["hidden"] if "hidden" in self.projections else (lambda x: x)
        keep = mask.bool() if mask is not None else None
        hidden = attn = 0.0
        for j in range(self.pairs):
            diff = (proj(s[f"h{j}"]) - t[f"h{j}"]).pow(2).mean(-1)
            hidden = hidden + (diff[keep].mean() if keep is not None else diff.mean())
            if self.attention_weight:
                log_s = attention_logprobs(s[f"q{j}"], s[f"k{j}"], self.heads[j][0], mask)
                log_t = attention_logprobs(t[f"q{j}"], t[f"k{j}"], self.heads[j][1], mask)
                if j in self.averaged:
                    log_s, log_t = _head_mean(log_s), _head_mean(log_t)
                kl = (log_t.exp() * (log_t - log_s)).nan_to_num(0.0, posinf=0.0, neginf=0.0).sum(-1)
                attn = attn + (kl.mean(1)[keep].mean() if keep is not None else kl.mean())
        return hidden / self.pairs, attn / self.pairs if torch.is_tensor(attn) else torch.zeros(())

    def close(self) -> None:
        self.s_taps.close()
        self.t_taps.close()


def _head_mean(logp: torch.Tensor) -> torch.Tensor:
    """log of the head-averaged attention distribution, [B, 1, L, L]. Padded keys (-inf) are floored
    first: logsumexp over all -inf has a NaN gradient; exp(-1e4) is still exactly 0 in the KL."""
    return torch.logsumexp(logp.clamp_min(-1e4), 1, keepdim=True) - math.log(logp.shape[1])


def _channels(stage: nn.Sequential) -> int:
    """Output channels of a ResNet stage (its last block's last BatchNorm)."""
    bns = [m for m in stage[-1].modules() if isinstance(m, nn.BatchNorm2d)]
    return bns[-1].num_features
