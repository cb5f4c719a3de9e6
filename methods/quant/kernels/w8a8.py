"""W8A8 kernels: per-token int8 activation quantization and an int8 GEMM with fused scales.

The GEMM reads B as stored by `W8A8Linear` ([N, K], K contiguous): on Hopper that layout is
what makes int8 tensor cores pay (an N-major B ran ~5x slower, see gpu-anchors). It
accumulates exactly in int32 and applies `a_scale[m] * b_scale[n]` (+ bias) in the epilogue,
writing fp16/bf16/fp32 directly, so no int32 [M, N] tensor ever reaches memory.
"""
from __future__ import annotations

import functools

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from slimbench.methods.quant.kernels._util import interpreting, pow2_cover, round_half_even


@triton.jit
def _quant_act_kernel(x_ptr, q_ptr, s_ptr, static_ptr, K, stride_xm, stride_qm,
                      STATIC: tl.constexpr, BLOCK_K: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_K)
    if STATIC:
        scale = tl.load(static_ptr).to(tl.float32)
    else:
        amax = tl.zeros([BLOCK_K], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            x = tl.load(x_ptr + row * stride_xm + k0 + offs, mask=k0 + offs < K, other=0.0).to(tl.float32)
            amax = tl.maximum(amax, tl.abs(x))
        scale = tl.maximum(tl.max(amax, axis=0) / 127.0, 1e-10)
    tl.store(s_ptr + row, scale)
    for k0 in range(0, K, BLOCK_K):
        mask = k0 + offs < K
        x = tl.load(x_ptr + row * stride_xm + k0 + offs, mask=mask, other=0.0).to(tl.float32)
        q = tl.minimum(tl.maximum(round_half_even(x / scale), -127.0), 127.0)
        tl.store(q_ptr + row * stride_qm + k0 + offs, q.to(tl.int8), mask=mask)


def quantize_act(x: torch.Tensor, static_scale: torch.Tensor | None = None,
                 block_k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] float -> (int8 [M, K], fp32 scale [M]); per-token unless a static scale is given."""
    m, k = x.shape
    x = x.contiguous()
    q = torch.empty(m, k, dtype=torch.int8, device=x.device)
    s = torch.empty(m, dtype=torch.float32, device=x.device)
    block_k = block_k or pow2_cover(k, 16, 4096 if interpreting() else 2048)
    static = static_scale is not None
    _quant_act_kernel[(m,)](x, q, s, static_scale if static else s, k, x.stride(0), q.stride(0),
                            STATIC=static, BLOCK_K=block_k)
    return q, s


@dataclass(frozen=True)
class GemmConfig:
    block_m: int = 128
    block_n: int = 256
    block_k: int = 128
    group_m: int = 8
    num_warps: int = 8
    num_stages: int = 3
    kernel: str = "plain"  # "plain": one program per tile, pointer loads; "tma": see _int8_gemm_tma_kernel


def default_config(m: int, n: int, k: int, gelu: bool = False, tma: bool = False) -> GemmConfig:
    """Fixed tiles by shape (no autotune), the best of the H200 sweep of 2026-11-29
    (`results/benchmarks/quant-kernels-nvidia-h200.json`): for M <= 32, 16-row tiles with
    BLOCK_K 256 (1.61x / 1.71x / 1.33x over fp16 at M = 1 / 16 / 32, against 1.39 / 1.43 / 1.03x
    for the earlier 16-32 x 128 x 128); 64 x 128 where N is narrow (BERT FFN down: 1.12x against
    0.92x); 128 x 256 through TMA (`tma`: Hopper, aligned operands) where K <= 4096 (FFN up 1.25x
    against 1.06x, 16384 x 4096^2 1.69x against 1.15x) and 256 x 128 pointer tiles past that
    (8192^3: 1.73x against 1.56x). A GELU epilogue (`gelu`) needs registers next to the
    accumulator: 128x128 tiles with 8 warps compile for sm_90 without spills where 128x256 (and
    128x128 with 4 warps) spill. Under the interpreter: the biggest tiles the shape allows."""
    if interpreting():
        return GemmConfig(pow2_cover(m, 16, 128), pow2_cover(n, 16, 128), pow2_cover(k, 32, 128), 8, 4, 1)
    if m <= 64:
        return GemmConfig(16 if m <= 32 else 64, 128, 256 if k >= 256 else 128, 8, 4, 4)
    if gelu:
        return GemmConfig(128, 128, 128, 8, 8, 3)
    if m * n <= 1 << 22:
        return GemmConfig(64, 128, 128, 8, 4, 4)
    if tma and k <= 4096:
        return GemmConfig(128, 256, 128, 8, 8, 3, "tma")
    return GemmConfig(256, 128, 128, 8, 8, 3)


@functools.cache
def _has_tma(index: int) -> bool:
    return torch.cuda.get_device_capability(index)[0] >= 9


ACTS = {None: 0, "relu": 1, "gelu": 2, "gelu_tanh": 3}  # epilogue activations (ACT constexpr)


@triton.jit
def _epilogue(c, qs_ptr, ACT: tl.constexpr, QOUT: tl.constexpr):
    """Optional activation, then optional static symmetric int8 quantization (scale at qs_ptr)
    of the fp32 tile: what the next layer would otherwise do in two more passes over memory."""
    if ACT == 1:
        c = tl.maximum(c, 0.0)
    elif ACT == 2:
        c = 0.5 * c * (1.0 + tl.math.erf(c * 0.7071067811865476))
    elif ACT == 3:  # tanh(u) = 2 sigmoid(2u) - 1
        c = c * tl.sigmoid(1.5957691216057308 * (c + 0.044715 * c * c * c))
    if QOUT:
        c = tl.minimum(tl.maximum(round_half_even(c / tl.load(qs_ptr)), -127.0), 127.0)
    return c


@triton.jit
def _int8_gemm_kernel(a_ptr, b_ptr, as_ptr, bs_ptr, bias_ptr, qs_ptr, c_ptr, M, N, K,
                      stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
                      HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr, ACT: tl.constexpr, QOUT: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * grid_n  # grouped launch order: neighbouring programs share B tiles in L2
    first_m = (pid // width) * GROUP_M
    size_m = min(grid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % size_m
    pid_n = (pid % width) // size_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    rm = tl.where(offs_m < M, offs_m, 0)  # clamp rows/cols so the main loop needs no M/N masks
    rn = tl.where(offs_n < N, offs_n, 0)
    a_ptrs = a_ptr + rm[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + rn[None, :] * stride_bn + offs_k[:, None] * stride_bk
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            a = tl.load(a_ptrs, mask=offs_k[None, :] + k0 < K, other=0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] + k0 < K, other=0)
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    a_s = tl.load(as_ptr + rm)
    b_s = tl.load(bs_ptr + rn)
    c = acc.to(tl.float32) * a_s[:, None] * b_s[None, :]
    if HAS_BIAS:
        c += tl.load(bias_ptr + rn).to(tl.float32)[None, :]
    c = _epilogue(c, qs_ptr, ACT, QOUT)
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn, c.to(c_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _int8_gemm_tma_kernel(a_desc, b_desc, c_desc, as_ptr, bs_ptr, bias_ptr, qs_ptr, M, N, K,
                          HAS_BIAS: tl.constexpr, ACT: tl.constexpr, QOUT: tl.constexpr,
                          NUM_PROGRAMS: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                          GROUP_M: tl.constexpr):
    """Persistent variant for Hopper: one program per SM walks the tiles (no tail wave, the
    epilogue of one tile overlaps the loads of the next) and moves A, B and C through tensor
    descriptors, i.e. the TMA bulk-copy engine, which zero-fills and clips at the edges, so
    neither the main loop nor the store needs masks. Same maths as `_int8_gemm_kernel`."""
    start = tl.program_id(0)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    width = GROUP_M * grid_n
    for tile in tl.range(start, grid_m * grid_n, NUM_PROGRAMS, flatten=True):
        first_m = (tile // width) * GROUP_M
        size_m = min(grid_m - first_m, GROUP_M)
        pid_m = first_m + (tile % width) % size_m
        pid_n = (tile % width) // size_m
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
        for kt in range(k_tiles):
            a = a_desc.load([off_m, kt * BLOCK_K])
            b = b_desc.load([off_n, kt * BLOCK_K])
            acc = tl.dot(a, b.T, acc, out_dtype=tl.int32)
        offs_m = off_m + tl.arange(0, BLOCK_M)
        offs_n = off_n + tl.arange(0, BLOCK_N)
        a_s = tl.load(as_ptr + offs_m, mask=offs_m < M, other=0.0)
        b_s = tl.load(bs_ptr + offs_n, mask=offs_n < N, other=0.0)
        c = acc.to(tl.float32) * a_s[:, None] * b_s[None, :]
        if HAS_BIAS:
            c += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
        c = _epilogue(c, qs_ptr, ACT, QOUT)
        c_desc.store([off_m, off_n], c.to(c_desc.dtype))


def tma_ok(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype) -> bool:
    """TMA descriptors need 16-byte-aligned bases and row strides (K % 16 for int8, N * itemsize)."""
    esize = torch.empty(0, dtype=out_dtype).element_size()
    return (a.is_contiguous() and b.is_contiguous() and a.shape[1] % 16 == 0
            and (b.shape[0] * esize) % 16 == 0 and a.data_ptr() % 16 == 0 and b.data_ptr() % 16 == 0)


def _num_programs(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # the interpreter: a few programs still exercise the persistent tile loop
    return torch.cuda.get_device_properties(device).multi_processor_count


def _launch_tma(a, b, a_scale, b_scale, bias, c, cfg: "GemmConfig", act: int, out_scale) -> None:
    from triton.tools.tensor_descriptor import TensorDescriptor

    m, k = a.shape
    n = b.shape[0]
    a_desc = TensorDescriptor.from_tensor(a, [cfg.block_m, cfg.block_k])
    b_desc = TensorDescriptor.from_tensor(b, [cfg.block_n, cfg.block_k])
    c_desc = TensorDescriptor.from_tensor(c, [cfg.block_m, cfg.block_n])
    tiles = triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n)
    programs = min(tiles, _num_programs(a.device))
    _int8_gemm_tma_kernel[(programs,)](
        a_desc, b_desc, c_desc, a_scale, b_scale, bias if bias is not None else a_scale,
        out_scale if out_scale is not None else a_scale, m, n, k,
        HAS_BIAS=bias is not None, ACT=act, QOUT=out_scale is not None, NUM_PROGRAMS=programs,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages)


def int8_gemm(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor,
              bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.float16,
              config: GemmConfig | None = None, act: str | None = None,
              out_scale: torch.Tensor | None = None) -> torch.Tensor:
    """(a int8 [M, K] @ b int8 [N, K]^T) * a_scale[:, None] * b_scale[None, :] + bias -> [M, N].

    `act` ('relu', 'gelu', 'gelu_tanh') is applied in the epilogue; with `out_scale` (fp32 [],
    the next layer's static input scale) the result is quantized there too and returned as int8
    (`out_dtype` ignored), so the activation and the quantization cost no pass over memory."""
    m, k = a.shape
    n, k2 = b.shape
    if k != k2 or a.dtype != torch.int8 or b.dtype != torch.int8:
        raise ValueError(f"int8_gemm wants int8 [M, K] x int8 [N, K]; got {a.dtype} {tuple(a.shape)} "
                         f"and {b.dtype} {tuple(b.shape)}")
    if act not in ACTS:
        raise ValueError(f"int8_gemm: act={act!r} is not one of {', '.join(map(repr, ACTS))}")
    if out_scale is not None:
        out_dtype, out_scale = torch.int8, out_scale.float().reshape(1)
    cfg = config or default_config(m, n, k, gelu=act in ("gelu", "gelu_tanh"),
                                   tma=a.is_cuda and _has_tma(a.device.index or 0) and tma_ok(a, b, out_dtype))
    c = torch.empty(m, n, dtype=out_dtype, device=a.device)
    if cfg.kernel not in ("plain", "tma"):
        raise ValueError(f"int8_gemm: kernel={cfg.kernel!r} is not one of 'plain', 'tma'")
    if cfg.kernel == "tma":
        if not tma_ok(a, b, out_dtype):  # asked for explicitly (defaults never are): say so, don't time another
            raise ValueError(f"int8_gemm: kernel='tma' needs contiguous 16-byte-aligned rows (K % 16 == 0, "
                             f"N * {c.element_size()} % 16 == 0); got K={k}, N={n}: use kernel='plain'")
        _launch_tma(a, b, a_scale.float().contiguous(), b_scale.float().contiguous(), bias, c, cfg, ACTS[act],
                    out_scale)
        return c
    grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n),)
    _int8_gemm_kernel[grid](
        a, b, a_scale.float().contiguous(), b_scale.float().contiguous(), bias if bias is not None else c,
        out_scale if out_scale is not None else c, c,
        m, n, k, a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
        HAS_BIAS=bias is not None, EVEN_K=k % cfg.block_k == 0, ACT=ACTS[act], QOUT=out_scale is not None,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return c
