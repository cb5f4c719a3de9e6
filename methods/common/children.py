"""Child models of a trained model: the shape helpers and the weight inheritance that a
distillation student and an architecture-search child share.

A child is always `task.build_model(**overrides)`; what it starts from is the parent's weights,
its most important units first (`ranked`), copied as leading slices layer by mapped layer
(`inherit`). Written for the two model kinds the suite ships: timm ResNets and transformers
encoders; other models get leading slices of same-named tensors.
"""
from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from slimbench.core.config import ConfigError

_LAYER = re.compile(r"(^|\.)(encoder\.layer)\.(\d+)\.")


def hf_config(model: nn.Module) -> Any | None:
    """The transformers config of a wrapped or bare transformers model, else None."""
    inner = getattr(model, "model", model)
    cfg = getattr(inner, "config", None)
    return cfg if hasattr(cfg, "num_hidden_layers") else None


def resnet_stages(model: nn.Module) -> list[nn.Module] | None:
    """The four stages of a timm ResNet (`layer1`..`layer4`), else None."""
    net = getattr(model, "net", model)
    stages = [getattr(net, f"layer{i}", None) for i in range(1, 5)]
    return stages if all(isinstance(s, nn.Sequential) for s in stages) else None


def encoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """A transformers encoder's layer list (`...encoder.layer`), else None."""
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and name.endswith("encoder.layer"):
            return m
    return None


def layer_map(teacher: nn.Module, student: nn.Module, given: tuple[int, ...], owner: str) -> list[int]:
    """Which teacher layer each student transformer layer copies / imitates ([] for other models)."""
    t_layers, s_layers = encoder_layers(teacher), encoder_layers(student)
    if t_layers is None or s_layers is None:
        if given:
            raise ConfigError(f"{owner}: layer_map={list(given)} names transformer layers, but this model has none")
        return []
    n_t, n_s = len(t_layers), len(s_layers)
    if not given:
        return [round((i + 1) * n_t / n_s) - 1 for i in range(n_s)] if n_s <= n_t else \
            [min(i, n_t - 1) for i in range(n_s)]
    if len(given) != n_s:
        raise ConfigError(f"{owner}: layer_map={list(given)} has {len(given)} entries but the student has {n_s} "
                          f"layers; give one teacher layer (0..{n_t - 1}) per student layer")
    bad = [i for i in given if i >= n_t]
    if bad:
        raise ConfigError(f"{owner}: layer_map names teacher layer(s) {bad}, but the teacher has layers 0..{n_t - 1}")
    return list(given)


def inherit(student: nn.Module, teacher: nn.Module, mapping: list[int]) -> dict[str, int]:
    """Copy the teacher's weights into the student: student layer i <- teacher layer mapping[i]; a
    smaller tensor takes the teacher tensor's leading slice in every dimension (the first channels,
    neurons, positions), a larger one the teacher's values in its leading part. Returns counts."""
    t_state = teacher.state_dict()
    s_state = student.state_dict()
    copied = sliced = fresh = 0
    with torch.no_grad():
        for key, dst in s_state.items():
            src_key = _LAYER.sub(lambda m: f"{m.group(1)}{m.group(2)}.{mapping[int(m.group(3))]}.", key) \
                if mapping else key
            src = t_state.get(src_key)
            if src is None or src.dim() != dst.dim():
                fresh += 1
                continue
            if src.dim() == 0:
                dst.copy_(src)
                copied += 1
                continue
            region = tuple(slice(0, min(a, b)) for a, b in zip(dst.shape, src.shape))
            dst[region].copy_(src[region])
            copied += 1
            sliced += dst.shape != src.shape
    student.load_state_dict(s_state)
    return {"tensors_inherited": copied, "tensors_sliced": sliced, "tensors_fresh": fresh}


def ranked(teacher: nn.Module, student: nn.Module, example: dict[str, torch.Tensor]) -> tuple[nn.Module, str]:
    """A copy of the teacher whose most important units come first, so that the student's leading
    slices inherit them: a transformer's FFN neurons are reordered by the L1 norm of their in- and
    out-weights (a permutation: the copy computes exactly what the teacher does); a CNN's coupled
    channel groups (Torch-Pruning's dependency graph: residual sums, BatchNorm) are cut to the
    student's widths, keeping the channels of largest L1 norm. Returns (copy, how)."""
    import copy

    t = copy.deepcopy(teacher)
    layers = encoder_layers(t)
    if layers is not None:
        with torch.no_grad():
            for block in layers:
                up, down = block.intermediate.dense, block.output.dense
                order = torch.argsort(up.weight.abs().sum(1) + down.weight.abs().sum(0), descending=True, stable=True)
                up.weight.copy_(up.weight[order])
                if up.bias is not None:
                    up.bias.copy_(up.bias[order])
                down.weight.copy_(down.weight[:, order])
        return t, "FFN neurons ordered by L1 norm"
    if resnet_stages(t) is None:
        return t, "leading slices"
    import torch_pruning as tp

    for p in t.parameters():
        p.requires_grad_(True)
    graph = tp.DependencyGraph().build_dependency(t, example_inputs=example)
    names = {m: n for n, m in t.named_modules()}
    wanted = dict(student.named_modules())
    heads = [m for m in t.modules() if isinstance(m, nn.Linear)]  # class outputs are never cut
    score = tp.importance.MagnitudeImportance(p=1)
    for group in graph.get_all_groups(ignored_layers=heads):
        root = group[0].dep.target.module
        want = wanted.get(names.get(root, ""))
        if not isinstance(root, nn.Conv2d) or not isinstance(want, nn.Conv2d) or want.out_channels >= root.out_channels:
            continue
        keep = set(torch.argsort(score(group), descending=True)[:want.out_channels].tolist())
        drop = [i for i in range(root.out_channels) if i not in keep]
        graph.get_pruning_group(root, group[0].dep.handler, idxs=drop).prune()
    for p in t.parameters():
        p.requires_grad_(False)
    return t.eval(), "channels of largest L1 norm per coupled group (Torch-Pruning dependency graph)"


def builder_values(model: nn.Module) -> dict[str, Any]:
    """The builder arguments that describe `model`'s shape, read off the model itself: a
    transformers config's numbers, or a timm ResNet's `layers`, `channels` and `stem_width`
    (the deep stem's middle width; a plain stem has none to vary). What relative search-space
    choices ("0.5x") are relative to."""
    hf = hf_config(model)
    if hf is not None:
        return {k: v for k, v in hf.to_dict().items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    stages = resnet_stages(model)
    if stages is None:
        return {}
    net = getattr(model, "net", model)
    out: dict[str, Any] = {"layers": [len(s) for s in stages], "channels": [s[0].conv1.out_channels for s in stages]}
    if isinstance(net.conv1, nn.Sequential):
        out["stem_width"] = [m for m in net.conv1 if isinstance(m, nn.Conv2d)][1].out_channels
    return out


def model_kind(model: nn.Module) -> str | None:
    """'transformer', 'resnet' or None: which built-in child rules apply."""
    if hf_config(model) is not None and encoder_layers(model) is not None:
        return "transformer"
    return "resnet" if resnet_stages(model) is not None else None


def child_from(parent: nn.Module, child: nn.Module, example: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Initialise `child` (a builder's fresh model of another shape) from a trained `parent`: each
    child layer from an evenly spaced parent layer, the parent's most important units first
    (`ranked`), copied as leading slices (`inherit`). Returns what was done, for the run record."""
    mapping = layer_map(parent, child, (), "child")
    source, how = ranked(parent, child, example)
    info = inherit(child, source, mapping)
    info["inherited"] = how
    if mapping:
        info["layer_map"] = mapping
    return info
