"""Logit-distillation losses shared by every family that trains against the teacher.

Distillation trains students with them; quantization-aware training can use the teacher's
logits as its loss too (a student landing on packed int8/int4 storage), so they live here once
rather than inside one family. Plain PyTorch, checked against hand-written formulas in tests.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def tokens(logits: torch.Tensor, labels: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-token logits `[batch, tokens, vocab]` (a causal LM) as `[n, vocab]` rows with their labels,
    positions labelled -100 (not predicted) dropped; class logits `[batch, classes]` pass as they are.
    `others` (a teacher's logits) are cut the same way."""
    if logits.dim() <= 2:
        return (logits, labels, *others)
    keep = labels.reshape(-1) != -100
    rows = [t.reshape(-1, t.shape[-1])[keep] for t in (logits, *others)]
    return (rows[0], labels.reshape(-1)[keep], *rows[1:])


def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of class logits, or next-token cross-entropy of a causal LM's logits: the loss
    methods take gradients of (saliencies, sensitivities, penalised fine-tuning)."""
    logits, labels = tokens(logits, labels)
    return F.cross_entropy(logits, labels)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float,
            alpha: float) -> torch.Tensor:
    """Hinton KD: alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y).

    The T^2 keeps the soft term's gradients on the scale of the hard term's as T grows; the KL
    is averaged per example (`batchmean`), which is what makes it a KL divergence. A causal LM's
    logits are distilled per predicted token (each token is an example)."""
    student, labels, teacher = tokens(student, labels, teacher)
    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), reduction="batchmean",
                    log_target=True) * (t * t)
    if alpha >= 1:
        return soft
    return alpha * soft + (1 - alpha) * F.cross_entropy(student, labels)


def _binary_kl(p_s: torch.Tensor, p_t: torch.Tensor) -> torch.Tensor:
    """KL between two-way distributions given as [N, 2] probabilities, summed over the batch."""
    return (p_t * (torch.log(p_t.clamp_min(1e-12)) - torch.log(p_s.clamp_min(1e-12)))).sum()


def dkd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float,
             alpha: float, beta: float, ce: float = 1.0) -> torch.Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022): ce * CE + alpha * TCKD + beta * NCKD, each KD term x T^2.

    TCKD is the KL between the binary (target, rest) splits of the two softened distributions;
    NCKD the KL between the distributions over the non-target classes alone (target logit masked
    out). Classic KD couples the two, weighting NCKD by the teacher's (1 - p_target), which
    suppresses it exactly where the teacher is confident; weighting them apart is the fix.
    A causal LM's logits are distilled per predicted token."""
    student, labels, teacher = tokens(student, labels, teacher)
    t = temperature
    n = student.shape[0]
    target = F.one_hot(labels, student.shape[-1]).bool()
    p_s, p_t = F.softmax(student / t, -1), F.softmax(teacher / t, -1)
    bin_s = torch.stack([p_s[target], p_s.masked_fill(target, 0).sum(-1)], -1)
    bin_t = torch.stack([p_t[target], p_t.masked_fill(target, 0).sum(-1)], -1)
    tckd = _binary_kl(bin_s, bin_t) / n * (t * t)
    masked_s = (student / t).masked_fill(target, float("-inf"))
    masked_t = (teacher / t).masked_fill(target, float("-inf"))
    log_q_s = F.log_softmax(masked_s, -1).masked_fill(target, 0)
    q_t = F.softmax(masked_t, -1)
    log_q_t = F.log_softmax(masked_t, -1).masked_fill(target, 0)
    nckd = (q_t * (log_q_t - log_q_s)).sum() / n * (t * t)
    out = alpha * tckd + beta * nckd
    return out + ce * F.cross_entropy(student, labels) if ce else out


def teacher_kd(teacher: Callable[..., torch.Tensor], temperature: float, alpha: float) -> Callable:
    """The trainer loss `(model, inputs, logits, labels)` of Hinton KD against a frozen teacher;
    `teacher(inputs)` gives its logits (run under no_grad here)."""
    def loss(model, inputs, logits, labels):
        with torch.no_grad():
            t = teacher(inputs)
        return kd_loss(logits, t, labels, temperature, alpha)
    return loss
