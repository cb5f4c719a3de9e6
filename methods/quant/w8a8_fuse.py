"""`quant.w8a8:fuse_act=true`: an activation, and the next layer's quantization, in the GEMM epilogue.

Why: in a transformer MLP (Linear -> GELU -> Linear) the W8A8 model otherwise writes the first
GEMM's output, reads and writes it again for the activation, then reads it and writes int8 for
the second layer's quantization: three passes over the widest activation in the block. With
the activation fused the first GEMM writes the activated values once; when the consumer's
activations are static (one calibrated scale), the epilogue also quantizes with that scale and
writes int8, which the consumer takes as is (`W8A8Base.quantize_input`).

Which layers pair up is traced, not guessed from names: one calibration batch runs through the
quantized model with hooks recording which tensor each W8A8 Linear produced, which activation
module consumed it and which W8A8 Linear consumed the activation's output. The activation
module is then replaced by nn.Identity and the producer by a `W8A8ActLinear`. Because another
reader of those tensors (a residual, say) would silently get different values, the fused model
is checked against the unfused one on that batch and compress fails if they disagree. The
int8 tensor handed to the consumer carries the model's activation dtype as `_slim_dtype`
(`w8a8.act_dtype`), so the consumer knows what to write.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from slimbench.methods.common.layers import replace_module, snr_db
from slimbench.methods.quant.w8a8 import W8A8Linear, act_dtype

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.base import CompressionContext

# Activation modules by class name (transformers' classes matched without importing it).
_BY_NAME = {"ReLU": "relu", "GELUActivation": "gelu", "PytorchGELUTanh": "gelu_tanh", "GELUTanh": "gelu_tanh",
            "NewGELUActivation": "gelu_tanh"}


def act_kind(module: nn.Module) -> str | None:
    """The epilogue activation equal to `module`, or None if it is not one the kernel has."""
    if type(module) is nn.GELU:
        return "gelu_tanh" if module.approximate == "tanh" else "gelu"
    kind = _BY_NAME.get(type(module).__name__)
    if kind == "gelu" and getattr(module, "act", None) is not None and getattr(module.act, "__name__", "") != "gelu":
        return None  # transformers' GELUActivation(use_gelu_python=True) computes a Python formula
    return kind


class W8A8ActLinear(W8A8Linear):
    """A W8A8Linear followed by its activation and, with `int8_out`, the consumer's static
    quantization (`out_scale`, a copy of the consumer's `input_scale`), all in the epilogue."""

    def __init__(self, in_features: int, out_features: int, bias: bool, static: bool, symmetric: bool,
                 act: str, int8_out: bool):
        super().__init__(in_features, out_features, bias, static, symmetric)
        self.act = act
        self.register_buffer("out_scale", torch.ones(()) if int8_out else None)
        self.fusion: dict = {}

    @classmethod
    def from_w8a8(cls, layer: W8A8Linear, act: str, out_scale: torch.Tensor | None) -> "W8A8ActLinear":
        new = cls(layer.in_features, layer.out_features, layer.bias is not None, layer.static, layer.symmetric,
                  act, out_scale is not None)
        missing, unexpected = new.load_state_dict(layer.state_dict(), strict=False)  # all but out_scale
        assert not unexpected and set(missing) <= {"out_scale"}, (missing, unexpected)
        if out_scale is not None:
            new.out_scale = out_scale.detach().clone().float()
        return new.to(layer.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = act_dtype(x)
        y = self.gemm(x.reshape(-1, self.in_features), self.act, self.out_scale,
                      out=dtype if x.dtype == torch.int8 else None)
        y = y.reshape(*x.shape[:-1], self.out_features)
        if self.out_scale is None:
            return y.to(dtype)
        y._slim_dtype = dtype  # the consumer writes the model's activation dtype
        return y

    def extra_repr(self) -> str:
        return super().extra_repr() + f", act={self.act}, int8_out={self.out_scale is not None}"


def trace(model: nn.Module, ctx: "CompressionContext") -> list[dict]:
    """One calibration batch through `model` (eval mode): each (W8A8 Linear -> activation module
    -> W8A8 Linear) chain by tensor identity (the tensors are kept alive, so ids are not reused).
    Only unambiguous chains are returned: an activation module called more than once (shared,
    so replacing it would change its other uses), an activation output read by more than one
    W8A8 layer (each wants its own scale) or a producer feeding more than one activation is
    left alone. Readers that are not modules (a residual add) cannot be seen here: `fuse`
    compares the fused model with the unfused one for those."""
    produced, act_out, chains, handles, keep = {}, {}, [], [], []
    calls: dict[str, int] = {}
    readers: dict[int, int] = {}
    fed: dict[str, int] = {}
    names = {m: n for n, m in model.named_modules()}

    def on_linear_in(module, args):
        x = args[0]
        if id(x) in act_out:
            readers[id(x)] = readers.get(id(x), 0) + 1
            producer, act_name, kind = act_out[id(x)]
            chains.append({"producer": producer, "act": kind, "act_module": act_name, "consumer": names[module],
                           "_out": id(x)})

    def on_linear_out(module, args, out):
        keep.append(out)
        produced[id(out)] = names[module]

    def on_act(module, args, out):
        keep.append(out)
        calls[names[module]] = calls.get(names[module], 0) + 1
        if id(args[0]) in produced:
            fed[produced[id(args[0])]] = fed.get(produced[id(args[0])], 0) + 1
            act_out[id(out)] = (produced[id(args[0])], names[module], act_kind(module))

    for m in model.modules():
        if type(m) is W8A8Linear:
            handles += [m.register_forward_pre_hook(on_linear_in), m.register_forward_hook(on_linear_out)]
        elif act_kind(m) is not None:
            handles.append(m.register_forward_hook(on_act))
    was_training = model.training
    model.eval()
    try:
        batch = next(iter(ctx.calibration()), None)
        if batch is None:
            raise ValueError("fuse_act traces the model on a calibration batch, but the calibration set is empty")
        with torch.no_grad():
            model(**{k: v.to(ctx.device) for k, v in batch[0].items()})
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [{k: v for k, v in c.items() if k != "_out"} for c in chains
            if calls[c["act_module"]] == 1 and readers[c["_out"]] == 1 and fed[c["producer"]] == 1]


def apply(model: nn.Module, fusions: list[dict], fill: bool = True) -> None:
    """Swap producers for W8A8ActLinear and activation modules for nn.Identity. `fill`: copy
    weights and the consumer's scale (compress); otherwise empty layers for load_state_dict."""
    for f in fusions:
        producer = model.get_submodule(f["producer"])
        consumer = model.get_submodule(f["consumer"])
        int8_out = bool(f["int8_out"])
        if fill:
            new = W8A8ActLinear.from_w8a8(producer, f["act"], consumer.input_scale if int8_out else None)
        else:
            new = W8A8ActLinear(producer.in_features, producer.out_features, producer.bias is not None,
                                producer.static, producer.symmetric, f["act"], int8_out)
        new.fusion = dict(f)
        replace_module(model, f["producer"], new)
        replace_module(model, f["act_module"], nn.Identity())


def fuse(model: nn.Module, ctx: "CompressionContext", owner: str, min_snr_db: float = 30.0) -> list[dict]:
    """Trace, fuse, and check the fused model against the unfused one on a calibration batch:
    identical on the CPU (the same torch ops in the same order); on a GPU the epilogue computes
    the activation in fp32 where the unfused model may round to fp16 first, so there the check
    is an SNR floor (30 dB), well above what a tensor with another reader gave in tests (3 dB)."""
    fusions = trace(model, ctx)
    for f in fusions:
        consumer = model.get_submodule(f["consumer"])
        f["int8_out"] = bool(consumer.static and consumer.symmetric)
    if not fusions:
        return []
    batch = {k: v.to(ctx.device) for k, v in next(iter(ctx.calibration()))[0].items()}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        before = model(**batch)
        apply(model, fusions)
        after = model(**batch)
    model.train(was_training)
    ref, out = _logits(before).float(), _logits(after).float()
    exact = ref.device.type == "cpu"
    if (exact and not torch.equal(ref, out)) or (not exact and snr_db(ref, out) < min_snr_db):
        raise ValueError(f"{owner}: fuse_act changed the model's output (SNR {snr_db(ref, out):.1f} dB on a "
                         "calibration batch): a fused tensor has another reader; use fuse_act=false")
    return fusions


def _logits(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output[0]


def fused_meta(model: nn.Module) -> list[dict]:
    return [dict(m.fusion) for m in model.modules() if isinstance(m, W8A8ActLinear)]
