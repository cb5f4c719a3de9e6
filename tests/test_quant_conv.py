"""Conv2d quantization (quant.minmax, quant.kmeans), quant.w8a8 on CNNs, and the default skip
list against the real module names of both standard task models. Models are tiny: the CPU is shared."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from slimbench.methods import CompressionContext, create_method
from slimbench.methods.common.layers import WEIGHT_LAYERS, eligible, snr_db
from slimbench.methods.common.options import DEFAULT_SKIP
from slimbench.methods.quant.kmeans import CodebookConv2d
from slimbench.methods.quant.linear import QuantConv2d, QuantLinear
from slimbench.suite.context import make_context


class TinyCNN(nn.Module):
    """ResNet-ish naming under a `net.` wrapper: a stem `conv1` and a `fc` head (both skipped by
    default) around convs covering stride, dilation, groups, no bias and reflect padding."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Module()
        self.net.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.net.body = nn.Sequential(
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=2, dilation=2, groups=4), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
            nn.Conv2d(32, 48, 1))
        self.net.fc = nn.Linear(48, 10)

    def forward(self, pixel_values):
        x = self.net.body(torch.relu(self.net.conv1(pixel_values)))
        return self.net.fc(x.mean((2, 3)))


def ctx_for(seed=0) -> CompressionContext:
    return make_context(seed=seed)


def roundtrip(method, result, tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(result.model.state_dict(), str(path))
    meta = json.loads(json.dumps(result.meta))
    skeleton = TinyCNN(seed=123).to(memory_format=torch.channels_last)  # a fresh build, as the task's builder gives
    return method.restore(skeleton, load_file(str(path)), meta)


@pytest.mark.parametrize("spec,cls,min_db", [
    ("quant.minmax", QuantConv2d, 18), ("quant.minmax:bits=8,symmetric=false", QuantConv2d, 35),
    ("quant.minmax:bits=4,conv_granularity=group,group_size=72", QuantConv2d, 18),
    ("quant.kmeans:iters=6", CodebookConv2d, 18), ("quant.kmeans:bits=8,dim=2,iters=4", CodebookConv2d, 20)])
def test_conv_quantization_roundtrip(spec, cls, min_db, tmp_path):
    model = TinyCNN().to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 12, 12).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = model(x)
    method = create_method(spec)
    result = method.compress(model, ctx_for())
    q = result.model
    convs = [q.net.body[i] for i in (0, 2, 4, 6)]
    assert all(isinstance(m, cls) for m in convs)
    assert type(q.net.conv1) is nn.Conv2d and type(q.net.fc) is nn.Linear  # default skip: stem and head
    assert convs[1].groups == 4 and convs[1].dilation == (2, 2) and convs[2].padding_mode == "reflect"
    with torch.no_grad():
        out = q(x)
        assert snr_db(ref, out) > min_db
        restored = roundtrip(method, result, tmp_path)
        assert isinstance(restored.net.body[2], cls) and restored.net.body[2].groups == 4
        assert torch.equal(restored(x), out)


def test_conv_storage_is_packed():
    conv = nn.Conv2d(32, 64, 3)  # rows of 32*9 = 288
    q = QuantConv2d.from_conv(conv, 4, "channel", 128, True)
    assert q.qweight.dtype == torch.uint8 and q.qweight.shape == (64, 144) and q.scale.shape == (64, 1)
    g = QuantConv2d.from_conv(conv, 3, "group", 96, False)
    assert g.qweight.nbytes == 64 * 288 * 3 // 8 and g.scale.shape == (64, 3) and g.zero.shape == (64, 3)
    c = CodebookConv2d.from_conv(conv, 2, 1, 4, seed=0)
    assert c.codes.nbytes == 64 * 288 // 4 and c.codebook.shape == (4, 1)
    x = torch.randn(1, 32, 7, 7)
    with torch.no_grad():  # same numbers as the dequantized weight in a plain conv
        w = nn.Conv2d(32, 64, 3)
        w.weight.copy_(q.dequantize().reshape(64, 32, 3, 3))
        w.bias.copy_(conv.bias)
        torch.testing.assert_close(q(x), w(x))


def test_conv_declared_flops_are_dense(effective_flops):
    from slimbench.suite.measure.flops import count_flops

    x = {"pixel_values": torch.randn(1, 1, 12, 12)}
    dense = count_flops(TinyCNN(), x)
    for spec in ("quant.minmax", "quant.kmeans:iters=2"):
        model = create_method(spec).compress(TinyCNN(), ctx_for()).model
        flops = count_flops(model, x)
        assert flops["dense"] == dense["dense"]
        assert flops["effective"] == effective_flops(TinyCNN(), model, x) <= dense["effective"]
        assert flops["bops"] < dense["bops"]  # low-bit weights in the quantized convs


def _quantized_names(model):
    return {n for n, _ in eligible(model, DEFAULT_SKIP, WEIGHT_LAYERS)}


def test_default_skip_on_fashion_mnist_model():
    pytest.importorskip("timm")
    from slimbench.tasks import get_task

    model = get_task("fashion-mnist", "quick").build_model()
    layers = {n for n, m in model.named_modules() if type(m) in WEIGHT_LAYERS}
    assert {"net.conv1.0", "net.fc"} <= layers  # the names the patterns are written for
    assert _quantized_names(model) == layers - {"net.conv1.0", "net.fc"}
    assert "net.conv1.3" in _quantized_names(model) and "net.layer1.0.conv1" in _quantized_names(model)


def test_default_skip_on_bert_classifier_names():
    """The rotten-tomatoes model is BertForSequenceClassification behind HFClassifier (`model.`);
    a tiny BERT has the same names and builds in milliseconds."""
    transformers = pytest.importorskip("transformers")
    from slimbench.tasks.text import HFClassifier

    cfg = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, num_labels=2)
    model = HFClassifier(transformers.BertForSequenceClassification(cfg))
    linears = {n for n, m in model.named_modules() if type(m) is nn.Linear}
    assert "model.classifier" in linears and "model.bert.pooler.dense" in linears
    assert _quantized_names(model) == linears - {"model.classifier"}
    assert not any(isinstance(m, (QuantLinear, nn.Embedding)) for _, m in eligible(model, DEFAULT_SKIP, WEIGHT_LAYERS))


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Dropout(0.5), nn.Conv2d(16, 8, 3, padding=1), nn.BatchNorm2d(8))

    def forward(self, pixel_values):
        return self.body(pixel_values)


@pytest.mark.parametrize("spec", ["quant.minmax:bits=2,granularity=channel", "quant.kmeans:bits=2,iters=4",
                                  "quant.gptq:bits=2", "quant.w8a8"])
def test_recalibrate_bn_matches_quantized_statistics(spec, tmp_path):
    """After recalibration the first BatchNorm holds exactly the statistics of its quantized
    input over the calibration set (cumulative average of the per-batch mean and unbiased
    variance); later ones are re-estimated too (their inputs pass earlier BatchNorms in train
    mode, as in AdaBN, so they are only checked to have moved)."""
    g = torch.Generator().manual_seed(3)
    calib = [({"pixel_values": torch.randn(8, 3, 6, 6, generator=g) * 2 + 1}, torch.zeros(8)) for _ in range(3)]
    ctx = make_context(calibration=calib)
    plain_result = create_method(spec).compress(ConvBN().eval(), ctx)
    plain = plain_result.model
    method = create_method(spec + ("," if ":" in spec else ":") + "recalibrate_bn=true")
    result = method.compress(ConvBN().eval(), ctx)
    model = result.model
    assert result.metrics["bn_recalibrated_layers"] == 2 and "bn_recalibrated_layers" not in result.meta
    assert "bn_recalibrated_layers" not in plain_result.metrics
    assert not model.training and model.body[1].momentum == 0.1  # modes and momentum restored
    x = torch.cat([b[0]["pixel_values"] for b in calib])
    with torch.no_grad():
        feats = [model.body[0](b[0]["pixel_values"]) for b in calib]  # the quantized conv's outputs
        mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
        var = torch.stack([f.transpose(0, 1).flatten(1).var(1) for f in feats]).mean(0)
        torch.testing.assert_close(model.body[1].running_mean, mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.body[1].running_var, var, rtol=1e-4, atol=1e-5)
        for idx in (1, 5):
            assert not torch.equal(plain.body[idx].running_mean, model.body[idx].running_mean)
        restored = method.restore(ConvBN(), load_file_state(model, tmp_path), json.loads(json.dumps(result.meta)))
        assert torch.equal(restored.eval()(x), model(x))


def load_file_state(model, tmp_path):
    path = tmp_path / "m.safetensors"
    save_file(model.state_dict(), str(path))
    return load_file(str(path))


def test_recalibrate_bn_without_batchnorm_or_data():
    ctx = make_context()
    method = create_method("quant.minmax:recalibrate_bn=true,skip=")
    assert method.compress(TinyLinear(), ctx).metrics["bn_recalibrated_layers"] == 0  # nothing to do: not an error
    with pytest.raises(ValueError, match="recalibrate_bn needs calibration data"):
        create_method("quant.minmax:recalibrate_bn=true").compress(ConvBN(), ctx)


class TinyLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(32, 32)

    def forward(self, x):
        return self.a(x)


class TinyMixed(nn.Module):
    """Convs, one Linear a quantizer takes on any device, and the default-skipped head."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3))
        self.proj = nn.Linear(16, 16)
        self.fc = nn.Linear(16, 3)

    def forward(self, pixel_values):
        return self.fc(self.proj(self.body(pixel_values).mean((2, 3))))


def _with(spec: str, extra: str) -> str:
    return spec + ("," if ":" in spec else ":") + extra


@pytest.mark.parametrize("spec", ["quant.minmax:granularity=channel", "quant.kmeans:iters=2", "quant.w8a8"])
def test_convs_are_kept_when_compressing_for_cuda_unless_asked(spec):
    """convs=auto keeps convs for CUDA (recorded with the reason) and quantizes them on the CPU;
    a model left with nothing to quantize is UNSUPPORTED, never FAILED."""
    from slimbench.methods.base import Unsupported

    cuda_ctx = make_context(seed=0, device="cuda")
    result = create_method(_with(spec, "compute=fp32")).compress(TinyMixed(), cuda_ctx)
    assert [type(result.model.body[i]) for i in (0, 2)] == [nn.Conv2d, nn.Conv2d]
    assert result.metrics["layers_swapped"] == 1 and type(result.model.proj) is not nn.Linear
    assert result.metrics["convs_kept"]["layers"] == 2 and "cuDNN" in result.metrics["convs_kept"]["reason"]
    on_cpu = create_method(spec).compress(TinyMixed(), ctx_for())
    assert on_cpu.metrics["layers_swapped"] == 3 and "convs_kept" not in on_cpu.metrics
    forced = create_method(_with(spec, "convs=quantize,compute=fp32")).compress(TinyMixed(), cuda_ctx)
    assert forced.metrics["layers_swapped"] == 3 and "convs_kept" not in forced.metrics
    kept = create_method(_with(spec, "convs=keep")).compress(TinyMixed(), ctx_for())
    assert kept.metrics["layers_swapped"] == 1 and kept.metrics["convs_kept"]["layers"] == 2
    with pytest.raises(Unsupported, match=r"but 4 nn.Conv2d layer\(s\), and convs=auto keeps"):
        create_method(_with(spec, "compute=fp32")).compress(TinyCNN(), cuda_ctx)
    with pytest.raises(Unsupported, match="found no"):  # nothing at all, on any device
        create_method(_with(spec, "skip=*")).compress(TinyMixed(), ctx_for())
