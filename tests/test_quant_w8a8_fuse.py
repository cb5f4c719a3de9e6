"""quant.w8a8:fuse_act=true: traced producer -> activation -> consumer chains, fused into the
first GEMM's epilogue. On the CPU the fused path runs the same torch ops in the same order, so
the fused model must give bit-identical outputs; a chain whose tensor has another reader must
be refused."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import slimbench.methods.quant  # noqa: F401
from slimbench.core.config import ConfigError
from slimbench.methods import CompressionContext, create_method
from slimbench.methods.quant.w8a8_fuse import W8A8ActLinear, act_kind
from slimbench.suite.context import make_context


class MLP(nn.Module):
    def __init__(self, residual: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.act1 = nn.Linear(32, 64), nn.GELU()
        self.fc2, self.act2 = nn.Linear(64, 48), nn.ReLU()
        self.fc3, self.head = nn.Linear(48, 32), nn.Linear(32, 4)
        self.residual = residual

    def forward(self, x):
        h = self.act1(self.fc1(x))
        y = self.fc3(self.act2(self.fc2(h)))
        return self.head(y + h[..., :32] if self.residual else y)


def ctx(make=lambda g: {"x": torch.randn(16, 32, generator=g)}) -> CompressionContext:
    g = torch.Generator().manual_seed(1)
    calib = [(make(g), torch.zeros(16, dtype=torch.long)) for _ in range(3)]
    return make_context(calibration=calib)


@pytest.mark.parametrize("acts", ["static", "dynamic"])
def test_fused_mlp_is_bit_identical_and_roundtrips(acts, tmp_path):
    c = ctx()
    plain = create_method(f"quant.w8a8:activations={acts},skip=").compress(MLP(), c).model
    method = create_method(f"quant.w8a8:activations={acts},fuse_act=true,skip=")
    result = method.compress(MLP(), c)
    fused = result.model
    assert isinstance(fused.fc1, W8A8ActLinear) and isinstance(fused.fc2, W8A8ActLinear)
    assert isinstance(fused.act1, nn.Identity) and isinstance(fused.act2, nn.Identity)
    assert fused.fc1.act == "gelu" and fused.fc2.act == "relu"
    assert (fused.fc1.out_scale is not None) == (acts == "static")
    x = torch.randn(5, 7, 32)
    with torch.no_grad():
        assert torch.equal(fused(x), plain(x))
        if acts == "static":  # the producer hands int8 straight to the consumer, tagged with the dtype
            h = fused.fc1(x)
            assert h.dtype == torch.int8 and h._slim_dtype == torch.float32
    meta = json.loads(json.dumps(result.meta))
    assert [f["producer"] for f in meta["fused_act"]] == ["fc1", "fc2"]
    assert all(f["int8_out"] == (acts == "static") for f in meta["fused_act"])
    save_file(fused.state_dict(), str(tmp_path / "m.safetensors"))
    restored = method.restore(MLP(), load_file(str(tmp_path / "m.safetensors")), meta)
    with torch.no_grad():
        assert torch.equal(restored.eval()(x), fused(x))


def test_fused_tensor_with_another_reader_is_refused():
    with pytest.raises(ValueError, match="fuse_act changed the model's output"):
        create_method("quant.w8a8:activations=static,fuse_act=true,skip=").compress(MLP(residual=True), ctx())


def test_fuse_act_config_and_kinds():
    with pytest.raises(ConfigError, match="fuse_act=true needs act_symmetric=true"):
        create_method("quant.w8a8:fuse_act=true,act_symmetric=false")
    assert act_kind(nn.GELU(approximate="tanh")) == "gelu_tanh" and act_kind(nn.SiLU()) is None


def test_fused_hf_bert_mlp():
    """BertIntermediate (dense + GELUActivation) feeding BertOutput.dense: one fusion per layer."""
    from transformers import BertConfig, BertForSequenceClassification

    from slimbench.tasks.text import HFClassifier

    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32, num_labels=2)

    def make():
        torch.manual_seed(0)
        return HFClassifier(BertForSequenceClassification(cfg)).eval()
    c = ctx(lambda g: {"input_ids": torch.randint(0, 100, (4, 12), generator=g),
                       "attention_mask": torch.ones(4, 12, dtype=torch.long)})
    plain = create_method("quant.w8a8:activations=static").compress(make(), c).model
    method = create_method("quant.w8a8:activations=static,fuse_act=true")
    result = method.compress(make(), c)
    fused, meta = result.model, result.meta
    assert [f["consumer"].rsplit(".", 2)[-2:] for f in meta["fused_act"]] == [["output", "dense"]] * 2
    inputs = {"input_ids": torch.randint(0, 100, (3, 12)), "attention_mask": torch.ones(3, 12, dtype=torch.long)}
    with torch.no_grad():
        assert torch.equal(fused(**inputs), plain(**inputs))


class Ambiguous(nn.Module):
    """One ReLU module used twice, and one GELU output read by two quantized Linears: neither
    chain is unambiguous, so neither may be fused (a shared module would vanish from its other
    use; two consumers would each want their own scale)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.c = nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 32)
        self.d, self.e, self.f = nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 32)
        self.relu, self.gelu = nn.ReLU(), nn.GELU()

    def forward(self, x):
        h = self.c(self.relu(self.b(self.relu(self.a(x)))))
        g = self.gelu(self.d(h))
        return self.e(g) + self.f(g)


def test_ambiguous_chains_are_left_alone():
    c = ctx()
    model = create_method("quant.w8a8:activations=static,fuse_act=true,skip=").compress(Ambiguous(), c).model
    assert not any(isinstance(m, W8A8ActLinear) for m in model.modules())
    assert isinstance(model.relu, nn.ReLU) and isinstance(model.gelu, nn.GELU)
