"""Which weights to prune: saliency scores, per-layer and global allocation, N:M masks, the cubic
ramp, and holding masks during training.

Masks are bool tensors shaped like each layer's weight (True = kept). Counts are exact: a layer
pruned to sparsity s keeps exactly round((1 - s) * numel) weights, and a global threshold removes
exactly round(s * total) weights over all layers, so the achieved sparsity is the asked one to
within one weight per layer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

import torch
from torch import nn

from slimbench.core.config import ConfigError
from slimbench.methods.common.layers import WEIGHT_LAYERS, per_layer_map, targets
from slimbench.methods.common.losses import task_loss

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.base import CompressionContext

Masks = dict[str, torch.Tensor]


def selected(model: nn.Module, skip: Iterable[str], owner: str) -> dict[str, nn.Module]:
    """The Linear / Conv2d layers a pruning method works on (raises if there are none)."""
    return dict(targets(model, skip, owner, WEIGHT_LAYERS, verb="prune"))


def overrides(layers: Iterable[str], per_layer: dict[str, float], owner: str) -> dict[str, float]:
    """{layer: sparsity} from fnmatch patterns; every pattern must name a selected layer."""
    return per_layer_map(layers, per_layer, owner, "prunable layer")


# ---------------------------------------------------------------- saliency

def gradients(model: nn.Module, layers: dict[str, nn.Module], ctx: "CompressionContext", batches: int,
              squared: bool, cost: dict | None = None) -> dict[str, torch.Tensor]:
    """Over `batches` training batches: the mean gradient dL/dw (`squared=False`), or the empirical
    Fisher diagonal, the mean over *examples* of (dL_i/dw)^2 (`squared=True`: one backward pass per
    example, since squaring a batch's mean gradient is not the Fisher). The batches and backward
    passes it ran are counted into `cost`.

    No optimizer step is taken: this is measurement, not training, and costs no budget."""
    acc = {n: torch.zeros_like(m.weight) for n, m in layers.items()}
    was_training = model.training
    model.eval()  # BatchNorm statistics and dropout as at inference
    stream, seen = ctx.train_batches(), 0

    def backward(inputs: dict, labels: torch.Tensor) -> None:
        model.zero_grad(set_to_none=True)
        task_loss(model(**inputs), labels).backward()
        for n, m in layers.items():
            g = m.weight.grad if m.weight.grad is not None else torch.zeros_like(m.weight)
            acc[n] += g.pow(2) if squared else g
    drawn = 0
    try:
        for drawn in range(1, batches + 1):
            inputs, labels = next(stream)
            inputs, labels = {k: v.to(ctx.device) for k, v in inputs.items()}, labels.to(ctx.device)
            if squared:
                for i in range(len(labels)):
                    backward({k: v[i:i + 1] for k, v in inputs.items()}, labels[i:i + 1])
                    seen += 1
            else:
                backward(inputs, labels)
                seen += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if cost is not None:
        cost["saliency_batches"] = cost.get("saliency_batches", 0) + drawn
        cost["saliency_backward_passes"] = cost.get("saliency_backward_passes", 0) + seen
    return {n: a / max(seen, 1) for n, a in acc.items()}


def saliency(model: nn.Module, layers: dict[str, nn.Module], kind: str, ctx: "CompressionContext | None" = None,
             batches: int = 8, cost: dict | None = None) -> dict[str, torch.Tensor]:
    """Importance of each weight (higher = keep): |w|, |w * g| (first-order Taylor) or
    w^2 * E[g^2] / 2 (OBD's second-order term with the diagonal empirical Fisher as the Hessian).
    Gradient passes are counted into `cost`."""
    if kind == "magnitude":
        return {n: m.weight.detach().abs() for n, m in layers.items()}
    if ctx is None:
        raise ValueError(f"{kind} saliency needs training batches")
    if kind == "taylor":
        g = gradients(model, layers, ctx, batches, squared=False, cost=cost)
        return {n: (m.weight.detach() * g[n]).abs() for n, m in layers.items()}
    if kind != "fisher":
        raise ValueError(f"saliency kind {kind!r} is not known; choose one of magnitude, taylor, fisher")
    g2 = gradients(model, layers, ctx, batches, squared=True, cost=cost)
    return {n: 0.5 * m.weight.detach().pow(2) * g2[n] for n, m in layers.items()}


# ---------------------------------------------------------------- allocation

def keep_top(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Mask keeping exactly round((1 - sparsity) * numel) highest scores (ties broken by position)."""
    if not 0 <= sparsity <= 1:
        raise ValueError(f"a layer's sparsity must be in [0, 1], got {sparsity}")
    n = score.numel()
    prune = int(round(sparsity * n))
    mask = torch.ones(n, dtype=torch.bool, device=score.device)
    if prune:
        order = torch.argsort(score.reshape(-1).float(), stable=True)
        mask[order[:prune]] = False
    return mask.reshape(score.shape)


def global_sparsities(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, float]:
    """Per-layer sparsities that one global threshold over all scores gives (exactly round(s * total) pruned)."""
    flat = torch.cat([s.reshape(-1).float().cpu() for s in scores.values()])
    prune = int(round(sparsity * flat.numel()))
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    if prune:
        chosen[torch.argsort(flat, stable=True)[:prune]] = True
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = float(chosen[start:start + s.numel()].sum()) / s.numel()
        start += s.numel()
    return out


def rest_target(sizes: dict[str, int], sparsity: float, fixed: dict[str, float], owner: str = "pruning") -> float:
    """The sparsity the layers not in `fixed` need so that all of them together reach `sparsity`."""
    rest = sum(n for name, n in sizes.items() if name not in fixed)
    if not rest:
        return 0.0
    need = (sparsity * sum(sizes.values()) - sum(fixed[n] * sizes[n] for n in fixed)) / rest
    if not 0 <= need < 1:
        total = sum(sizes.values())
        low = sum(fixed[n] * sizes[n] for n in fixed) / total
        raise ConfigError(f"{owner}: with per_layer fixing {len(fixed)} layer(s), the other layers would need "
                          f"sparsity {need:.3f} to reach {sparsity} overall; choose sparsity in "
                          f"[{low:.3f}, {low + rest / total:.3f})")
    return need


def allocate(scores: dict[str, torch.Tensor], sparsity: float, scope: str,
             fixed: dict[str, float], owner: str = "pruning") -> dict[str, float]:
    """Per-layer sparsity reaching `sparsity` over all the layers: the `fixed` overrides, the rest
    uniform (layer) or by one global threshold (global), making up the difference."""
    target = rest_target({n: s.numel() for n, s in scores.items()}, sparsity, fixed, owner)
    rest = {n: s for n, s in scores.items() if n not in fixed}
    if scope == "global" and rest:
        return {**global_sparsities(rest, target), **fixed}
    return {**{n: target for n in rest}, **fixed}


def row_masks(layers: dict[str, nn.Module], sparsity: float) -> Masks:
    """Whole output rows pruned, lowest L2 norm first over all layers, until at least `sparsity`
    of the weights are gone (the group-lasso threshold: rows go whole, so the count is a row's
    length coarser than asked)."""
    rows = [(float(norm), name, i) for name, m in layers.items()
            for i, norm in enumerate(m.weight.detach().reshape(m.weight.shape[0], -1).norm(dim=1))]
    total = sum(m.weight.numel() for m in layers.values())
    masks = {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in layers.items()}
    pruned = 0
    for _, name, i in sorted(rows):
        if pruned >= sparsity * total - 1e-9:
            break
        masks[name][i] = False
        pruned += masks[name][i].numel()
    return masks


def masks_from(scores: dict[str, torch.Tensor], sparsities: dict[str, float]) -> Masks:
    return {n: keep_top(s, sparsities[n]) for n, s in scores.items()}


def random_masks(layers: dict[str, nn.Module], sparsities: dict[str, float], seed: int) -> Masks:
    """Masks with the given per-layer sparsities at random positions (the control)."""
    g = torch.Generator().manual_seed(seed)
    return {n: keep_top(torch.rand(m.weight.shape, generator=g), sparsities[n]).to(m.weight.device)
            for n, m in layers.items()}


def block_layers(layers: dict[str, nn.Module], block: int) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """(the Linear layers whose shape `block` divides, {name: why the others stay dense})."""
    keep, dense = {}, {}
    for name, layer in layers.items():
        if not isinstance(layer, nn.Linear):
            dense[name] = f"{type(layer).__name__}: block pruning covers nn.Linear only"
        elif layer.in_features % block or layer.out_features % block:
            dense[name] = f"[{layer.out_features}, {layer.in_features}] is not a whole number of {block}x{block} blocks"
        else:
            keep[name] = layer
    return keep, dense


def block_scores(layers: dict[str, nn.Module], block: int) -> dict[str, torch.Tensor]:
    """L2 norm of every BxB weight block: [out/B, in/B] per layer."""
    out = {}
    for name, layer in layers.items():
        w = layer.weight.detach()
        blocks = w.reshape(w.shape[0] // block, block, w.shape[1] // block, block)
        out[name] = blocks.pow(2).sum((1, 3)).sqrt()
    return out


def expand_blocks(block_masks: Masks, block: int) -> Masks:
    return {n: m.repeat_interleave(block, 0).repeat_interleave(block, 1) for n, m in block_masks.items()}


def nm_masks(layers: dict[str, nn.Module], n: int, m: int, owner: str) -> Masks:
    """Keep the n largest |w| of every m consecutive inputs of each output row ([out, fan_in] view)."""
    from slimbench.methods.common.layers import fan_in, fan_in_name
    from slimbench.methods.common.options import require_divides

    for name, layer in layers.items():
        require_divides(owner, name, "m", m, fan_in(layer), fan_in_name(layer))
    return {name: nm_keep(layer.weight.detach(), n, m) for name, layer in layers.items()}


def nm_keep(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The N:M mask of one weight: its n largest |w| of every m consecutive inputs per output row
    (the caller has checked that m divides the fan-in)."""
    groups = weight.reshape(weight.shape[0], -1, m).abs()
    top = groups.topk(n, dim=-1).indices
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True).reshape(weight.shape)


def cubic(step: int, total: int, final: float, ramp: float = 0.75) -> float:
    """Zhu & Gupta's schedule: s_t = s_f * (1 - (1 - t / T)^3), reaching s_f at `ramp` of the steps."""
    end = max(1, int(ramp * total))
    t = min(step, end) / end
    return final * (1 - (1 - t) ** 3)


# ---------------------------------------------------------------- applying and holding

def apply(layers: dict[str, nn.Module], masks: Masks) -> None:
    with torch.no_grad():
        for n, m in layers.items():
            m.weight.mul_(masks[n].to(m.weight.dtype))


def holders(layers: dict[str, nn.Module], masks: Masks) -> tuple[Callable, Callable]:
    """(before_step, after_step) trainer hooks keeping pruned weights at zero: masked gradients
    (no momentum builds up on them) and the mask re-applied after each update (weight decay)."""
    def before(model, step):
        for n, m in layers.items():
            if m.weight.grad is not None:
                m.weight.grad.mul_(masks[n].to(m.weight.grad.dtype))

    def after(model, step):
        apply(layers, masks)
    return before, after

