"""The artifact format: exact size accounting, tied weights, dtypes, param counts, index bytes,
and reloading onto a freshly built model (of another shape, when the method says so)."""
from __future__ import annotations

import copy
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn

from slimbench.methods.base import Compressed, Method, MethodConfig
from slimbench.suite.artifact import count_params, load_artifact, read_artifact, save_artifact


def builder(make):
    """A task-builder stand-in: `build(**overrides)` -> a fresh model."""
    return lambda **overrides: make(**overrides)


@dataclass(frozen=True)
class _Cfg(MethodConfig):
    bits: int = field(default=8, metadata={"help": "test"})


class _Plain(Method):
    """Unregistered test method: saves the state dict as is."""

    name = "test.plain"
    family = "quantization"
    config_cls = _Cfg


class _Buffers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("q", torch.arange(10000, dtype=torch.int64).remainder(251).sub(125).to(torch.int8).view(100, 100))
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 10))


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.body = nn.Linear(8, 8)
        self.head = nn.Linear(8, 20, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(self.emb(ids))))


def test_size_is_exact_for_known_tensors(tmp_path: Path) -> None:
    model = _Buffers()
    info = save_artifact(Compressed(model, meta={"note": "hello"}), _Plain(), tmp_path)
    st, js = tmp_path / "model.safetensors", tmp_path / "model.json"
    assert info.tensors_path == st and info.meta_path == js
    assert info.size_bytes == os.path.getsize(st) + os.path.getsize(js)
    assert info.tensors_bytes == os.path.getsize(st) and info.meta_bytes == os.path.getsize(js)
    raw = st.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    assert len(raw) == 8 + header_len + 100 * 100 * 1 + 10 * 4
    doc = json.loads(js.read_text())
    assert doc["tensors"] == {"q": {"dtype": "int8", "shape": [100, 100]},
                              "scale": {"dtype": "float32", "shape": [10]}}
    assert doc["method"] == {"name": "test.plain", "family": "quantization",
                             "config": {"version": 1, "bits": 8}}
    assert doc["meta"] == {"note": "hello"} and doc["aliases"] == {}
    nonzero = int((model.q != 0).sum()) + 10
    assert (info.params_total, info.params_nonzero) == (10010, nonzero)


def test_tied_weight_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _Tied()
    info = save_artifact(model, _Plain(), tmp_path)
    doc = json.loads((tmp_path / "model.json").read_text())
    assert doc["aliases"] == {"head.weight": "emb.weight"}
    assert "head.weight" not in doc["tensors"]
    assert info.params_total == 20 * 8 + 8 * 8 + 8  # shared matrix counted once

    restored = load_artifact(tmp_path, builder(_Tied), _Plain())
    assert restored.head.weight is restored.emb.weight  # tie survives the round trip
    ids = torch.tensor([[1, 5, 7]])
    torch.testing.assert_close(restored(ids), model(ids))


def test_dtypes_preserved(tmp_path: Path) -> None:
    model = nn.Linear(4, 3).to(torch.bfloat16)
    model.register_buffer("codes", torch.tensor([1, 2, 255], dtype=torch.uint8))
    save_artifact(model, _Plain(), tmp_path)
    tensors, _ = read_artifact(tmp_path)
    assert tensors["weight"].dtype == torch.bfloat16 and tensors["codes"].dtype == torch.uint8
    torch.testing.assert_close(tensors["weight"], model.weight.detach())
    skeleton = nn.Linear(4, 3).to(torch.bfloat16)
    skeleton.register_buffer("codes", torch.zeros(3, dtype=torch.uint8))
    restored = load_artifact(tmp_path, lambda: skeleton, _Plain())
    torch.testing.assert_close(restored.codes, model.codes)


def test_overlapping_views_are_copied(tmp_path: Path) -> None:
    """Two buffers viewing one storage (not aliases) both survive; safetensors refuses sharing."""
    model = nn.Module()
    base = torch.arange(12, dtype=torch.float32)
    model.register_buffer("a", base[:6])
    model.register_buffer("b", base[6:])
    save_artifact(model, _Plain(), tmp_path)
    tensors, doc = read_artifact(tmp_path)
    assert doc["aliases"] == {}
    torch.testing.assert_close(tensors["b"], base[6:])


def test_wrong_method_is_refused(tmp_path: Path) -> None:
    save_artifact(nn.Linear(2, 2), _Plain(), tmp_path)

    class Other(_Plain):
        name = "test.other"

    with pytest.raises(ValueError, match="test.plain"):
        load_artifact(tmp_path, lambda: nn.Linear(2, 2), Other())
    with pytest.raises(ValueError, match=r"another config: bits=8 \(given 4\)"):
        load_artifact(tmp_path, lambda: nn.Linear(2, 2), _Plain(_Cfg(bits=4)))


def test_count_params_rules() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with torch.no_grad():
        model[0].weight.zero_()
    expected_total = sum(p.numel() for p in model.parameters())  # BN running stats excluded
    total, nonzero = count_params(model)
    assert total == expected_total == 4 * 27 + 4 + 4 + 4
    assert nonzero == 4 + 4  # conv bias + BN weight (ones); BN bias and conv weight are 0


def test_a_methods_own_parameter_count_never_replaces_the_suites(tmp_path) -> None:
    """A meta `params_total` used to override the count on both sides of the `params` check: the
    artifact now records what its tensors hold, and the method's figure stays in its meta."""
    from slimbench.methods import Compressed
    from slimbench.suite.artifact import save_artifact, stored_params

    model = nn.Linear(4, 2)
    info = save_artifact(Compressed(model, meta={"params_total": 7, "params_nonzero": 3}), _Plain(), tmp_path)
    assert (info.params_total, info.params_nonzero) == (10, 10) == stored_params(tmp_path, model)


class _MLP(nn.Module):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, hidden), nn.Linear(hidden, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def test_restore_builds_the_recorded_architecture(tmp_path: Path) -> None:
    """A student of another width reloads from its bytes alone: the artifact records the builder
    overrides and the loader builds that shape before restoring."""
    torch.manual_seed(0)
    student = _MLP(hidden=5)
    save_artifact(Compressed(student, build_overrides={"hidden": 5}), _Plain(), tmp_path)
    doc = json.loads((tmp_path / "model.json").read_text())
    assert doc["build_overrides"] == {"hidden": 5}
    built = []
    restored = load_artifact(tmp_path, lambda **kw: built.append(kw) or _MLP(**kw), _Plain())
    assert built == [{"hidden": 5}]
    x = torch.randn(3, 8)
    torch.testing.assert_close(restored(x), student(x))


def test_default_restore_resizes_pruned_layers(tmp_path: Path) -> None:
    """A channel-pruned model (fewer hidden units, BatchNorm and a conv shrunk) reloads onto the
    task's full-size build: the default restore fits the layers to the saved tensors."""
    torch.manual_seed(0)
    full = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1),
                         nn.Flatten(), nn.Linear(4 * 5 * 5, 6), nn.LayerNorm(6))
    keep = torch.tensor([0, 2, 3, 7])
    pruned = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1),
                           nn.Flatten(), nn.Linear(4 * 5 * 5, 6), nn.LayerNorm(6)).eval()
    with torch.no_grad():
        pruned[0].weight.copy_(full[0].weight[keep])
        pruned[0].bias.copy_(full[0].bias[keep])
        pruned[1].running_mean.uniform_(-1, 1)
        pruned[3].weight.copy_(full[3].weight[:, keep])
    save_artifact(pruned, _Plain(), tmp_path)
    restored = load_artifact(tmp_path, lambda: copy.deepcopy(full), _Plain()).eval()
    assert restored[0].out_channels == 4 and restored[1].num_features == 4 and restored[3].in_channels == 4
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(restored(x), pruned(x))


class _CSRLinear(nn.Module):
    """A Linear stored as CSR: values are parameters, indices are `slim_index` buffers."""

    slim_index = ("col_idx", "row_ptr")

    def __init__(self, dense: torch.Tensor) -> None:
        super().__init__()
        from slimbench.methods.common.storage import to_csr
        values, col, ptr = to_csr(dense)
        self.register_buffer("values", values)
        self.register_buffer("col_idx", col)
        self.register_buffer("row_ptr", ptr)


def test_index_tensors_are_not_parameters(tmp_path: Path) -> None:
    dense = torch.zeros(16, 300)
    dense[torch.arange(16), torch.arange(16) * 7] = 1.0  # 16 nonzeros; 300 columns need int16 indices
    info = save_artifact(_CSRLinear(dense), _Plain(), tmp_path)
    assert (info.params_total, info.params_nonzero) == (16, 16)  # values only
    assert info.index_bytes == 16 * 2 + 17 * 4
    assert json.loads((tmp_path / "model.json").read_text())["index_bytes"] == info.index_bytes
