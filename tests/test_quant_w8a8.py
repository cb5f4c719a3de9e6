"""quant.w8a8 on Conv2d (im2col + int8 GEMM) and asymmetric (zero-point) activations.

The integer path is checked exactly against fp64 arithmetic on the same quantized operands;
accuracy against the fp32 layer by SNR. Shapes are tiny: the CPU is shared."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from slimbench.core.recipe import TrainRecipe
from slimbench.core.task import TaskSpec
from slimbench.methods import CompressionContext, create_method
from slimbench.methods.base import Unsupported
from slimbench.methods.common.layers import snr_db
from slimbench.methods.quant.w8a8 import W8A8Conv2d, W8A8Linear, int8_matmul
from slimbench.suite.context import make_context


class TinyCNN(nn.Module):
    """Stem `conv1` and head `fc` (skipped by default) around a strided, a dilated, a grouped,
    a reflect-padded and a 1x1 conv; the grouped and reflect ones must stay fp32."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Module()
        self.net.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.net.body = nn.Sequential(
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1, groups=4), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
            nn.Conv2d(32, 48, 1))
        self.net.fc = nn.Linear(48, 10)

    def forward(self, pixel_values):
        x = self.net.body(torch.relu(self.net.conv1(pixel_values)))
        return self.net.fc(x.mean((2, 3)))


def ctx_for(calib=()) -> CompressionContext:
    return make_context(calibration=list(calib))


def images(n=2, bs=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [({"pixel_values": torch.randn(bs, 1, 12, 12, generator=g)}, torch.zeros(bs, dtype=torch.long))
            for _ in range(n)]


def fp64_conv_reference(q: W8A8Conv2d, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The same quantized operands (rows of the unfolded input, int8 weights), in fp64."""
    cols = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride).transpose(1, 2)
    x2 = cols.reshape(-1, q.in_features)
    xq, xs, z = q.quantize_input(x2)
    zz = 0 if z is None else z.double()[:, None]
    acc = (xq.double() - zz) @ q.weight.double().t()
    y = acc * xs.double()[:, None] * q.weight_scale.double()[None, :]
    if q.bias is not None:
        y = y + q.bias.double()
    return y


@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("conv", [nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(8, 16, (3, 2), stride=(2, 1),
                                                                             padding=(0, 2), dilation=(1, 2), bias=False)])
def test_conv_integer_path_exact(conv, sym):
    torch.manual_seed(0)
    x = torch.relu(torch.randn(2, 8, 9, 10)) if not sym else torch.randn(2, 8, 9, 10)
    q = W8A8Conv2d.from_conv(conv, None, symmetric=sym)
    cols = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride).transpose(1, 2)
    xq, _, z = q.quantize_input(cols.reshape(-1, q.in_features))
    zz = 0 if z is None else z.long()[:, None]
    assert torch.equal(q.integer_acc(xq, z), (xq.long() - zz) @ q.weight.long().t())  # exact int correction
    with torch.no_grad():
        ref = conv(x)
        out = q(x)
    assert out.shape == ref.shape
    ref64 = fp64_conv_reference(q, conv, x).reshape(2, ref.shape[2], ref.shape[3], 16).permute(0, 3, 1, 2)
    torch.testing.assert_close(out.double(), ref64, rtol=1e-5, atol=1e-5)
    assert snr_db(ref, out) > 25


def test_asymmetric_linear_exact_and_better_on_skewed_activations():
    torch.manual_seed(0)
    lin = nn.Linear(128, 64)
    x = F.gelu(torch.randn(40, 128) + 0.5)  # one-signed-ish, skewed
    sym, asym = W8A8Linear.from_linear(lin, None), W8A8Linear.from_linear(lin, None, symmetric=False)
    xq, xs, z = asym.quantize_input(x)
    assert xq.min() == -128 or xq.max() == 127  # the full 256-level range is used
    ref64 = ((xq.double() - z.double()[:, None]) @ asym.weight.double().t()) * xs.double()[:, None] \
        * asym.weight_scale.double() + lin.bias.double()
    with torch.no_grad():
        torch.testing.assert_close(asym(x).double(), ref64, rtol=1e-5, atol=1e-5)
        fp = lin(x)
        assert snr_db(fp, asym(x)) > snr_db(fp, sym(x)) + 1
    # static, per-tensor zero point: calibrate on the same distribution
    s = float((x.max() - x.min().clamp(max=0)) / 255)
    zs = int(torch.round(-x.min().clamp(max=0) / s) - 128)
    st = W8A8Linear.from_linear(lin, s, zs, symmetric=False)
    assert st.input_zero.dtype == torch.int32 and int(st.input_zero) == zs
    with torch.no_grad():
        assert snr_db(fp, st(x)) > 25


def test_rowsum_is_derived_not_stored():
    q = W8A8Linear.from_linear(nn.Linear(32, 8), None, symmetric=False)
    assert "weight_rowsum" not in q.state_dict()
    fresh = W8A8Linear(32, 8, True, False, symmetric=False)
    fresh.load_state_dict(q.state_dict())
    assert torch.equal(fresh.weight_rowsum, q.weight.sum(1, dtype=torch.int32))
    assert int8_matmul(q.weight[:3], q.weight).dtype == torch.int32


def roundtrip(method, result, tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items()}, str(path))  # as save_artifact
    meta = json.loads(json.dumps(result.meta))
    skeleton = TinyCNN(seed=123).to(memory_format=torch.channels_last)
    return method.restore(skeleton, load_file(str(path)), meta)


@pytest.mark.parametrize("spec,min_db", [
    ("quant.w8a8", 25), ("quant.w8a8:act_symmetric=false", 25),
    ("quant.w8a8:activations=static,calibration=minmax", 20),
    ("quant.w8a8:activations=static,act_symmetric=false,calibration=percentile", 20),
    ("quant.w8a8:activations=static,act_symmetric=false,calibration=mse", 20)])
def test_cnn_method_roundtrip_channels_last(spec, min_db, tmp_path):
    model = TinyCNN().to(memory_format=torch.channels_last)
    x = images(1, seed=7)[0][0]["pixel_values"].contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = model(x)
    method = create_method(spec)
    result = method.compress(model, ctx_for(images()))
    q = result.model
    body = q.net.body
    assert all(isinstance(body[i], W8A8Conv2d) for i in (0, 2, 8))
    assert type(body[4]) is nn.Conv2d and type(body[6]) is nn.Conv2d  # grouped, reflect: fp32
    assert type(q.net.conv1) is nn.Conv2d and type(q.net.fc) is nn.Linear  # default skip
    with torch.no_grad():
        y0 = body[0](torch.randn(2, 16, 12, 12).contiguous(memory_format=torch.channels_last))
        assert y0.is_contiguous(memory_format=torch.channels_last)
        out = q(x)
        assert snr_db(ref, out) > min_db
        assert torch.equal(q(x.contiguous()), out)  # memory format does not change the numbers
        restored = roundtrip(method, result, tmp_path)
        kept = result.metrics["kept_fp32"]  # recorded with the run, not needed to restore
        assert set(kept) == {"net.body.4", "net.body.6"} and "kept_fp32" not in result.meta
        assert "groups=4" in kept["net.body.4"]
        assert isinstance(restored.net.body[2], W8A8Conv2d) and restored.net.body[2].dilation == (2, 2)
        assert torch.equal(restored(x), out)


def test_conv_flops_are_dense_and_hooks_see_conv_input(effective_flops):
    from slimbench.suite.measure.flops import count_flops

    x = {"pixel_values": torch.randn(1, 1, 12, 12)}

    model = create_method("quant.w8a8").compress(TinyCNN(), ctx_for()).model
    flops, dense = count_flops(model, x), count_flops(TinyCNN(), x)
    assert flops["dense"] == dense["dense"]
    assert flops["effective"] == effective_flops(TinyCNN(), model, x) <= dense["effective"]
    assert flops["bops"] < 0.6 * dense["bops"]  # 8 x 8 bits per MAC in the quantized convs, 32 x 32 in the fp32 ones
    seen = []
    model = TinyCNN()
    model.net.body[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape))
    create_method("quant.w8a8:activations=static").compress(model, ctx_for(images(1)))
    assert seen == [torch.Size([4, 16, 12, 12])]  # calibration observed the NCHW conv input


def _task(kind, build):
    return TaskSpec(name=build.__name__, kind=kind, num_classes=10, metric="accuracy", profile="quick",
                    key=f"{kind}-{build.__name__}", finetune=TrainRecipe(steps=0), build_model=build)


def test_supports_cnn_and_errors_when_nothing_is_eligible():
    assert create_method("quant.w8a8").supports(_task("vision", TinyCNN), "cpu") is None
    only_grouped = lambda: nn.Sequential(nn.Conv2d(4, 4, 3, groups=4))  # noqa: E731
    reason = create_method("quant.w8a8:skip=").supports(_task("vision", only_grouped), "cpu")
    assert reason and "groups=1" in reason
    with pytest.raises(Unsupported, match="groups=4"):
        create_method("quant.w8a8:skip=").compress(only_grouped(), ctx_for())


@pytest.mark.parametrize("int_mm_exact", [True, False])
def test_int8_matmul_is_exact_where_int16_pairs_would_saturate(monkeypatch, int_mm_exact):
    """Rows of +-127 against weights of +-127 saturate an int16 pair sum (CPUs without VNNI); the
    GEMM must still be exact on every CPU: `_int_mm` only where the probe found it exact, else
    the K-chunked fp32 GEMM (checked here on both paths, K past one chunk)."""
    from slimbench.methods.quant import w8a8

    if int_mm_exact and not w8a8.cpu_int_mm_exact():
        pytest.skip("torch._int_mm is not exact on this CPU (no VNNI): the fallback is what runs here")
    monkeypatch.setattr(w8a8, "cpu_int_mm_exact", lambda: int_mm_exact)
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (5, 2500), generator=g, dtype=torch.int8)
    a[0], a[1, ::2], a[1, 1::2] = 127, 127, -127
    b = torch.randint(-127, 128, (24, 2500), generator=g, dtype=torch.int8)
    b[0], b[1, ::2], b[1, 1::2] = 127, 127, -127
    out = w8a8.int8_matmul(a, b)
    assert out.dtype == torch.int32 and torch.equal(out, (a.long() @ b.long().t()).int())
    assert out[0, 0] == 127 * 127 * 2500 and out[1, 1] == 127 * 127 * 2500
