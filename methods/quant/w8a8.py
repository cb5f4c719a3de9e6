"""W8A8 layers for `quant.w8a8` (method: `plugins.W8A8`; model-level selection and swapping in `w8a8_model`): int8 weights (per output channel) x int8 activations, int32 accumulation.

Activations are quantized per token at run time (`dynamic`) or with one per-tensor scale
per layer fixed from calibration data (`static`: min-max, a percentile, or the clip that
minimises quantization MSE); symmetric by default, or asymmetric (a zero point, so one-signed
activations such as post-ReLU ones use the full int8 range). nn.Conv2d runs as im2col
(`F.unfold`) then the same integer GEMM, so one output position is one "token". The CPU path
runs the GEMM through `torch._int_mm` (exact int32); on CUDA a Triton kernel fuses both scales
into the epilogue.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from slimbench.methods.common.cast import PackedStorage
from slimbench.methods.common.layers import REFERENCE, ConvGeometry, conv_cost, fan_in, linear_cost

QMAX = 127
UNFOLD_CHUNK = 1 << 24  # im2col elements materialised at once (bounds a conv's extra memory)


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row: (int8 [m, k], fp32 scale [m])."""
    x = x.float()
    scale = (x.abs().amax(-1) / QMAX).clamp_(min=1e-10)
    q = torch.div(x, scale[:, None]).round_().clamp_(-QMAX, QMAX).to(torch.int8)  # in place: fewer passes
    return q, scale


def quantize_static(x: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q = torch.round(x.float() / scale.float()).clamp(-QMAX, QMAX).to(torch.int8)
    return q, scale.float().expand(x.shape[0])


def asym_params(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[lo, hi] (widened to hold 0, so zero padding and exact zeros stay exact) -> 256 int8 levels:
    fp32 scale and int32 zero point z in [-128, 127], x ~ scale * (q - z)."""
    lo, hi = lo.float().clamp(max=0), hi.float().clamp(min=0)
    scale = ((hi - lo) / 255).clamp(min=1e-10)
    zero = (torch.round(-lo / scale) - 128).clamp(-128, 127).to(torch.int32)
    return scale, zero


def quantize_asym(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """x [m, k] with per-row (or broadcast scalar) scale / zero -> int8 [m, k]."""
    s, z = (scale[:, None], zero[:, None]) if scale.dim() else (scale, zero)
    return (torch.round(x.float() / s) + z).clamp(-128, 127).to(torch.int8)


def apply_act(y: torch.Tensor, act: str | None) -> torch.Tensor:
    """The activations a W8A8 GEMM can fuse (`w8a8_fuse`), in torch: the reference the kernel's
    epilogue must match."""
    if act is None:
        return y
    if act == "relu":
        return torch.relu(y)
    return F.gelu(y, approximate="tanh" if act == "gelu_tanh" else "none")


def act_dtype(x: torch.Tensor) -> torch.dtype:
    """The float dtype a layer should output for input `x`. An int8 `x` was quantized upstream by
    a fused producer (`w8a8_fuse`), which tags it with the model's activation dtype."""
    if x.dtype != torch.int8:
        return x.dtype
    dtype = getattr(x, "_slim_dtype", None)
    if dtype is None:
        raise RuntimeError("a W8A8 layer received an int8 tensor without its dtype tag: something between a "
                           "fused producer and this layer replaced the tensor; compress with fuse_act=false")
    return dtype


def int8_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a int8 [m, k] @ b int8 [n, k]^T -> exact int32 [m, n].

    `torch._int_mm` on CUDA needs m > 16 and k, n multiples of 8; on the CPU it takes any 2-D
    shape but is exact only where the CPU has VNNI/AMX (`cpu_int_mm_exact`). Elsewhere an fp32
    GEMM over K chunks of 1024 is exact (every partial sum is an integer below 2**24), and
    about as fast as the fp32 model; float64 where fp32 matmuls may run in reduced precision.
    """
    m, k = a.shape
    n = b.shape[0]
    if a.device.type == "cpu":
        if cpu_int_mm_exact():
            return torch._int_mm(a, b.t())
        if torch.get_float32_matmul_precision() == "highest":
            return _chunked_fp32_mm(a, b)
    elif a.is_cuda and m > 16 and k % 8 == 0 and n % 8 == 0 and k >= 16:
        try:
            return torch._int_mm(a, b.t())
        except RuntimeError:  # a build without this kernel: fall through to the reference
            pass
    return (a.double() @ b.double().t()).to(torch.int32)


EXACT_FP32_K = 1024  # 127 * 127 * 1024 < 2**24: an fp32 dot product of int8 codes this long is exact


def _chunked_fp32_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = None
    for k0 in range(0, a.shape[1], EXACT_FP32_K):
        part = (a[:, k0:k0 + EXACT_FP32_K].float() @ b[:, k0:k0 + EXACT_FP32_K].float().t()).to(torch.int32)
        out = part if out is None else out.add_(part)
    return out


@torch.compiler.assume_constant_result  # a fact of the machine: compiled graphs specialise on it
def cpu_int_mm_exact() -> bool:
    """Whether `torch._int_mm` is exact on this CPU. Without VNNI, oneDNN's (and fbgemm's) int8
    GEMM adds pairs of products in int16 (vpmaddubsw) and saturates, so a large row silently
    gives a wrong sum. Probed once per process, with the pattern that saturates, rather than
    read from CPU flags: the kernels a build dispatches to can be capped (ONEDNN_MAX_CPU_ISA)."""
    return _probe_int_mm()


@functools.cache
def _probe_int_mm() -> bool:
    x = torch.full((4, 64), QMAX, dtype=torch.int8)
    x[1::2] = -QMAX
    w = torch.full((64, 16), QMAX, dtype=torch.int8)
    w[:, 1::2] = -QMAX
    try:
        return torch.equal(torch._int_mm(x, w), x.long().matmul(w.long()).int())
    except RuntimeError:  # a build without the CPU kernel
        return False


PREPACKED_MIN_ROWS = 256  # below, `torch._int_mm` was as fast or faster (48 rows: 0.06-0.10 ms either way)


@torch.compiler.assume_constant_result
def cpu_prepacked_int8() -> bool:
    """Whether oneDNN's int8 Linear on a prepacked weight (`torch.ops.onednn.qlinear_pointwise`)
    runs here and gives the exact integer sums: only where `torch._int_mm` is exact too (VNNI/AMX).
    It packs the weight once instead of on every call (`torch._int_mm` does): 20% faster at 1536
    rows of MiniLM's shapes (2-core Xeon, AMX)."""
    return cpu_int_mm_exact() and _probe_prepacked()


@functools.cache
def _probe_prepacked() -> bool:
    if not hasattr(torch.ops.onednn, "qlinear_pointwise"):
        return False
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-QMAX, QMAX + 1, (5, 96), dtype=torch.int8, generator=g)
    w = torch.randint(-QMAX, QMAX + 1, (24, 96), dtype=torch.int8, generator=g)
    try:
        got = prepacked_int8_acc(x, torch.ops.onednn.qlinear_prepack(w, None), torch.ones(24), torch.zeros(24, dtype=torch.long))
        return torch.equal(got, x.long().matmul(w.long().t()).float())
    except (RuntimeError, AttributeError):  # a build without the oneDNN int8 ops
        return False


def prepacked_int8_acc(xq: torch.Tensor, packed: torch.Tensor, ones: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """int8 codes [M, K] x a oneDNN-prepacked int8 weight -> the integer sums as fp32 [M, N]. The
    op takes unsigned activations with a zero point: the codes shifted by 128 (a flip of the sign
    bit) with zero point 128 are the same integers; unit scales keep the sums unscaled."""
    qu = xq.view(torch.uint8).bitwise_xor(128)
    return torch.ops.onednn.qlinear_pointwise(qu, 1.0, 128, packed, ones, zeros, None, 1.0, 0, torch.float32,
                                              "none", [], "")


class _Packed:
    """A layer's prepacked weight (an opaque oneDNN tensor): never copied or pickled with the
    layer (deepcopy, state) but packed again from `weight` on first use."""

    def __init__(self, value: tuple | None = None):
        self.value = value

    def __deepcopy__(self, memo):
        return _Packed()

    def __getstate__(self):
        return {"value": None}


class W8A8Base(PackedStorage, nn.Module):
    """The integer GEMM shared by the Linear and Conv2d layers, over x2 [M, K] and weight [N, K].

    Buffers: `weight` int8 [out, K] (K-major, as the GEMM wants), `weight_scale` fp32 [out],
    `input_scale` fp32 [] (static only), `input_zero` int32 [] (static asymmetric only), `bias`.
    Asymmetric mode also keeps `weight_rowsum` int32 [out] for the zero-point correction; it is
    derived from `weight` at load, not stored in the artifact (non-persistent).
    """

    def _init_buffers(self, k: int, n: int, bias: bool, static: bool, symmetric: bool) -> None:
        self.in_features, self.out_features, self.static, self.symmetric = k, n, static, symmetric
        self.register_buffer("weight", torch.zeros(n, k, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(n))
        self.register_buffer("input_scale", torch.ones(()) if static else None)
        self.register_buffer("input_zero", torch.zeros((), dtype=torch.int32) if static and not symmetric else None)
        self.register_buffer("bias", torch.zeros(n) if bias else None)
        self.register_buffer("weight_rowsum", None if symmetric else torch.zeros(n, dtype=torch.int32),
                             persistent=False)

    def _fill(self, w2: torch.Tensor, bias: torch.Tensor | None, act: tuple | None):
        w = w2.detach().float()
        scale = (w.abs().amax(1) / QMAX).clamp(min=1e-10)
        self.weight.copy_(torch.round(w / scale[:, None]).clamp(-QMAX, QMAX).to(torch.int8))
        self.weight_scale.copy_(scale)
        if act is not None:
            self.input_scale.fill_(act[0])
            if not self.symmetric:
                self.input_zero.fill_(int(act[1]))
        if bias is not None:
            self.bias = bias.detach().clone().float()
        self._update_rowsum()
        return self.to(w2.device)

    def _update_rowsum(self) -> None:
        self.__dict__.pop("_prepacked", None)  # the weight changed: pack it again on next use
        if not self.symmetric:
            self.weight_rowsum = self.weight.sum(1, dtype=torch.int32)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._update_rowsum()

    def _apply(self, fn, recurse=True):
        self.__dict__.pop("_prepacked", None)
        return super()._apply(fn, recurse)

    def slim_resident(self) -> list[torch.Tensor]:
        """Tensors the layer holds besides its buffers (the prepacked weight), for resident bytes."""
        cache = self.__dict__.get("_prepacked")
        return [] if cache is None or cache.value is None else [cache.value[0]]

    def _cpu_acc(self, xq: torch.Tensor) -> torch.Tensor:
        """The exact sums on the CPU: oneDNN on the weight packed once, where it is exact, else
        `int8_matmul` (as int32)."""
        if xq.shape[0] < PREPACKED_MIN_ROWS or not (xq.device.type == "cpu" and cpu_prepacked_int8()) \
                or torch.compiler.is_compiling():
            return int8_matmul(xq, self.weight)  # compiled: inductor fuses around `_int_mm` (measured faster)
        cache = self.__dict__.setdefault("_prepacked", _Packed())
        if cache.value is None:
            n = self.weight.shape[0]
            cache.value = (torch.ops.onednn.qlinear_prepack(self.weight, None), torch.ones(n),
                           torch.zeros(n, dtype=torch.long))
        return prepacked_int8_acc(xq, *cache.value)

    def quantize_input(self, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x2 [M, K] -> (int8 [M, K], scale [M], zero point [M] or None when symmetric). An int8 x2
        was already quantized with this layer's static scale by a fused producer."""
        if x2.dtype == torch.int8:
            if not (self.static and self.symmetric):
                raise RuntimeError("int8 input needs a static symmetric W8A8 layer (the fused producer's scale)")
            return x2, self.input_scale.float().expand(x2.shape[0]), None
        if self.symmetric:
            q, s = quantize_static(x2, self.input_scale) if self.static else quantize_per_token(x2)
            return q, s, None
        if self.static:
            s, z = self.input_scale.float(), self.input_zero
            return quantize_asym(x2, s, z), s.expand(x2.shape[0]), z.expand(x2.shape[0])
        s, z = asym_params(x2.float().amin(-1), x2.float().amax(-1))
        return quantize_asym(x2, s, z), s, z

    def integer_acc(self, xq: torch.Tensor, zero: torch.Tensor | None) -> torch.Tensor:
        """sum_k (q - z) * w exactly: int32 GEMM minus z x row sums (int64, no overflow); with no
        zero point on the CPU, the sums may come as fp32 (`_cpu_acc`), as `gemm` converts them."""
        if zero is None:
            return self._cpu_acc(xq) if xq.device.type == "cpu" else int8_matmul(xq, self.weight)
        acc = int8_matmul(xq, self.weight)
        return acc.long() - zero.long()[:, None] * self.weight_rowsum.long()[None, :]

    def kernel_forward(self, x2: torch.Tensor, act: str | None = None, out_scale: torch.Tensor | None = None,
                       out: torch.dtype | None = None) -> torch.Tensor:
        """Triton path for x2 [M, K]: quantize activations, int8 GEMM with fused scales + bias
        (+ `act`, + quantization to int8 with `out_scale`, for `w8a8_fuse`).

        Asymmetric activations are quantized in torch and the zero-point term is subtracted after
        the GEMM in fp32 (sx*z x sw*rowsum, a rank-1 update), so nothing after it is fused. Used
        for CUDA tensors; tests call it on CPU tensors under the Triton interpreter."""
        from slimbench.methods.quant.kernels import w8a8 as kern

        out = out or (x2.dtype if x2.dtype in (torch.float16, torch.bfloat16) else torch.float32)
        if self.symmetric:
            if x2.dtype == torch.int8:
                xq, xs, _ = self.quantize_input(x2)
            else:
                xq, xs = kern.quantize_act(x2, self.input_scale)
            return kern.int8_gemm(xq, self.weight, xs, self.weight_scale, self.bias, out_dtype=out, act=act,
                                  out_scale=out_scale)
        xq, xs, z = self.quantize_input(x2)
        y = kern.int8_gemm(xq, self.weight, xs, self.weight_scale, self.bias, out_dtype=torch.float32)
        y -= (xs * z.float())[:, None] * (self.weight_scale * self.weight_rowsum.float())[None, :]
        y = apply_act(y, act)
        return y.to(out) if out_scale is None else quantize_static(y, out_scale)[0]

    def gemm(self, x2: torch.Tensor, act: str | None = None, out_scale: torch.Tensor | None = None,
             out: torch.dtype | None = None) -> torch.Tensor:
        """x2 [M, K] (float, or int8 from a fused producer) -> y [M, out], bias included: fp32 on
        the CPU; on CUDA the kernel writes `out` (default: the activation dtype) directly. With
        `act` / `out_scale` (fused layers), the activation and int8 quantization follow."""
        if x2.is_cuda:
            return self.kernel_forward(x2, act, out_scale, out)
        xq, xs, z = self.quantize_input(x2)
        y = self.integer_acc(xq, z).to(torch.float32).mul_(xs[:, None]).mul_(self.weight_scale)  # in place: fewer passes
        y = apply_act(y if self.bias is None else y.add_(self.bias), act)
        return y if out_scale is None else quantize_static(y, out_scale)[0]

    def slim_path(self, device: str, dtype: torch.dtype) -> str:
        """What `gemm` runs on `device` (the same tests as its dispatch). A conv is always a
        reference path: slimbench has no int8 conv kernel, and materialising every input patch
        (im2col) costs more than the int8 GEMM saves."""
        gemm = ("Triton int8 GEMM (scales fused)" if device.startswith("cuda") else
                (f"int8 GEMM: oneDNN qlinear on the weight prepacked once from {PREPACKED_MIN_ROWS} rows, "
                 "torch._int_mm below (VNNI/AMX)" if self.symmetric and cpu_prepacked_int8() else
                 "int8 GEMM: torch._int_mm (oneDNN, VNNI/AMX)") if cpu_int_mm_exact() else
                f"{REFERENCE}int8 codes through an exact fp32 GEMM (no exact int8 GEMM on this CPU)")
        if isinstance(self, ConvGeometry):
            return f"{REFERENCE}im2col (F.unfold) + {gemm.removeprefix(REFERENCE)}: no int8 conv kernel"
        return gemm

    def w8a8_repr(self) -> str:
        return f"static={self.static}, symmetric={self.symmetric}"

    def slim_weight(self) -> torch.Tensor:
        """The dense weight this layer computes with ([out, fan_in]), for measured sparsity and FLOPs."""
        return self.weight.float() * self.weight_scale[:, None]


class W8A8Linear(W8A8Base):
    def __init__(self, in_features: int, out_features: int, bias: bool, static: bool, symmetric: bool = True):
        super().__init__()
        self._init_buffers(in_features, out_features, bias, static, symmetric)

    @classmethod
    def from_linear(cls, lin: nn.Linear, input_scale: float | None, input_zero: int | None = None,
                    symmetric: bool = True) -> "W8A8Linear":
        q = cls(lin.in_features, lin.out_features, lin.bias is not None, input_scale is not None, symmetric)
        return q._fill(lin.weight, lin.bias, None if input_scale is None else (input_scale, input_zero))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = act_dtype(x)
        y = self.gemm(x.reshape(-1, self.in_features), out=dtype if x.dtype == torch.int8 else None)
        return y.to(dtype).reshape(*x.shape[:-1], self.out_features)

    def slim_cost(self, inputs, output) -> dict[str, int]:
        return linear_cost(self, inputs, bits=(8, 8))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.w8a8_repr()}"


class W8A8Conv2d(ConvGeometry, W8A8Base):
    """A Conv2d (groups == 1, zero padding) as im2col + the int8 GEMM: `weight` is the
    [out, in*kh*kw] view, each output position's input patch is one activation row (its own
    scale in dynamic mode). `in_features` is that row length, as `conv_cost` expects."""

    def __init__(self, conv: nn.Conv2d, static: bool, symmetric: bool = True):
        super().__init__()
        self.init_geometry(conv)
        self._init_buffers(fan_in(conv), conv.out_channels, conv.bias is not None, static, symmetric)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, input_scale: float | None, input_zero: int | None = None,
                  symmetric: bool = True) -> "W8A8Conv2d":
        q = cls(conv, input_scale is not None, symmetric)
        w2 = conv.weight.reshape(conv.out_channels, -1)
        return q._fill(w2, conv.bias, None if input_scale is None else (input_scale, input_zero))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # unbatched [C, H, W], as nn.Conv2d accepts
            return self.forward(x[None])[0]
        n, _, h, w = x.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        ph, pw = self.padding
        ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        per_image = self.in_features * ho * wo
        outs = []
        for xb in x.split(max(1, UNFOLD_CHUNK // max(per_image, 1))):
            cols = F.unfold(xb, self.kernel_size, self.dilation, self.padding, self.stride)  # [b, K, L]
            outs.append(self.gemm(cols.transpose(1, 2).reshape(-1, self.in_features)))
        y = torch.cat(outs).to(x.dtype).reshape(n, ho, wo, self.out_channels).permute(0, 3, 1, 2)
        return y if x.is_contiguous(memory_format=torch.channels_last) else y.contiguous()

    def slim_cost(self, inputs, output) -> dict[str, int]:
        return conv_cost(self, output, bits=(8, 8))

    def extra_repr(self) -> str:
        return f"{self.conv_repr()}, {self.w8a8_repr()}"
