"""`compute=`: the dtype a quantized model runs in (fp16 on CUDA by default, fp32 on CPU).

Checked on the CPU with bf16/fp16 standing in for the CUDA default: the wrapper casts the
unquantized layers and the inputs, leaves packed storage alone, is recorded in the artifact
and survives a save/restore round trip bit-exactly.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import slimbench.methods.quant  # noqa: F401
from slimbench.core.config import ConfigError
from slimbench.core.recipe import TrainRecipe
from slimbench.methods import CompressionContext, create_method
from slimbench.methods.common.cast import CastInputs, PackedStorage, resolve, unwrap
from slimbench.methods.common.layers import snr_db
from slimbench.suite.context import make_context


class Tiny(nn.Module):
    def __init__(self, d: int = 256, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d), nn.ReLU(), nn.Linear(d, d), nn.ReLU())
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        return self.head(self.body(x))


def ctx(device="cpu") -> CompressionContext:
    g = torch.Generator().manual_seed(1)
    calib = [({"x": torch.randn(32, 256, generator=g)}, torch.zeros(32, dtype=torch.long)) for _ in range(2)]
    return make_context(calibration=calib, train=calib, finetune=TrainRecipe(steps=4, lr=1e-3), device=device)


SPECS = ["quant.minmax", "quant.kmeans:bits=2", "quant.w8a8", "quant.gptq", "quant.qat"]


def test_resolve_auto_by_device():
    assert resolve("auto", "cuda") == resolve("auto", torch.device("cuda", 0)) == "fp16"
    assert resolve("auto", "cpu") == "fp32" and resolve("bf16", "cuda") == "bf16"


@pytest.mark.parametrize("spec", SPECS)
def test_auto_on_cpu_is_unwrapped_fp32(spec):
    result = create_method(spec).compress(Tiny(), ctx())
    assert not isinstance(result.model, CastInputs)
    assert result.meta["compute_dtype"] == "float32"


@pytest.mark.parametrize("spec,dtype", [(s, "bf16") for s in SPECS] + [(s, "fp16") for s in SPECS[:3]])
def test_low_precision_compute_wraps_and_roundtrips(spec, dtype, tmp_path):
    x = torch.randn(16, 256)
    fp32 = create_method(f"{spec}{',' if ':' in spec else ':'}compute=fp32").compress(Tiny(), ctx()).model
    with torch.no_grad():  # the same method computing in fp32: only the dtype differs
        ref = fp32(x)
    method = create_method(f"{spec}{',' if ':' in spec else ':'}compute={dtype}")
    result = method.compress(Tiny(), ctx())
    model = result.model
    assert isinstance(model, CastInputs) and model.dtype == getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}[dtype])
    inner, name = unwrap(model)
    assert name == str(model.dtype).removeprefix("torch.")
    packed = [m for m in inner.modules() if isinstance(m, PackedStorage)]
    assert packed, "nothing was quantized"
    plain = [m for m in inner.modules() if not isinstance(m, PackedStorage)]
    assert all(p.dtype == model.dtype for m in plain for p in m.parameters(recurse=False))
    for m in packed:  # the storage format is untouched: fp16 scales / codebooks, fp32 int8 scales
        floats = {t.dtype for t in [*m.buffers(recurse=False), *m.parameters(recurse=False)] if t.is_floating_point()}
        assert model.dtype not in floats or model.dtype == torch.float16 and floats <= {torch.float16, torch.float32}
    with torch.no_grad():
        out = model(x=x)
    assert out.dtype == torch.float32 and snr_db(ref, out) > 25

    meta = json.loads(json.dumps(result.meta))
    assert meta["compute_dtype"] == name
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    restored = method.restore(Tiny(seed=7), load_file(str(path)), meta)
    assert isinstance(restored, CastInputs) and restored.dtype == model.dtype
    with torch.no_grad():
        assert torch.equal(restored(x=x), out)


def test_cuda_auto_means_fp16_even_when_compressing_on_cpu():
    """The dtype follows the run's device (ctx.device), not where the tensors happen to be."""
    model = create_method("quant.minmax").compress(Tiny(), ctx("cuda")).model
    assert isinstance(model, CastInputs) and model.dtype == torch.float16


def test_bad_compute_names_choices():
    with pytest.raises(ConfigError, match=r"compute='fp8'.*auto, fp32, fp16, bf16"):
        create_method("quant.minmax:compute=fp8")
