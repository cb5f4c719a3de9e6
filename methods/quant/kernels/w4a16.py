"""W4A16: 4-bit group-wise weights x fp16/bf16 activations, dequantized inside the kernel.

Weights stay packed in HBM as `QuantLinear` stores them: uint8 [N, K/2], even k in the low
nibble, fp16 scales [N, K/g] and optional uint8 zeros (symmetric layers use the implicit
zero 8). At decode-sized M the weight stream is the whole cost (int4 K=4096 x N=11008 is
23 MB, ~6 us at H200 bandwidth), so instructions per weight decide whether a kernel reaches
it: an int->float convert per weight (I2F, 16/clk/SM) alone costs ~11 us there. Both kernels
therefore decode with the fp16 magic number: a nibble OR 0x6400 read as fp16 is exactly
1024 + q (0x4300 in bf16: 128 + q), and one LOP3 builds two of them in a 32-bit register.

- `dot` (`_w4a16_dot_kernel`): tiles [BLOCK_M, BLOCK_N] on tensor cores. Each group's tile is
  decoded to the exact integers q - z in the activation dtype (`b * 0x1001` puts a byte's two
  nibbles in the two halves: IMAD + LOP3 + HSUB2 per two weights) and multiplied as the A
  operand, W x^T (decoded in registers; as the B operand ptxas copies x fragments per MMA,
  +15% instructions). For BLOCK_M <= 32 the fp32 result is scaled per group and channel (no
  per-weight scale multiply); larger tiles scale the weights instead. BLOCK_K may divide the
  group or be a multiple of it (one dot per group inside the tile). Warps split BLOCK_N in 16s
  (64s for wgmma): BLOCK_N >= 16 * num_warps, or warps decode the same weights twice.
  `split_k` > 1 sums fp32 partials with atomics (plus zero-fill and cast launches). sm_90
  SASS: ~3.4-3.9 instructions per weight (the I2F decode it replaces: ~5.6-6.4).
- `gemv` (`_w4a16_gemv_kernel`): CUDA cores, one launch, block_m 1/2/4 rows of x. Lanes run
  along K (four int32 words = 32 weights per lane per 1024-wide chunk, one 16-byte load),
  warps along N; each thread keeps BLOCK_N / num_warps rows, so the fp32 x values it unpacks
  serve all of them. Per weight: 7/8 integer op + one HADD2.F32 (fp16 -> fp32) + one FFMA
  (3.56 instructions in sm_90 SASS); the scale and the 1024 + z offset are applied once per
  lane-word (s * (sum (1024+q) x - (1024+z) sum x)), lanes are reduced once at the end. Each
  extra x row adds an FFMA and x unpacking per weight (5.2 at M=2), so the default uses it at
  M == 1 only. No tl.dot there: it would waste 15/16 of the MMA and stage x in shared memory.
On GPU the nibble decode is PTX (`asm=True`; the Triton spelling of the same bit operations
compiles to ~1 more instruction per weight); the interpreter runs the Triton spelling.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from slimbench.methods.quant.kernels._util import (as_words, interpreting, pow2_at_most, pow2_cover,
                                                  store_lane_sums, unpack_pair)

CHUNK = 1024  # gemv: weights per row per 16-byte load of each of 32 lanes


@dataclass(frozen=True)
class W4Config:
    block_m: int = 16
    block_n: int = 64
    block_k: int = 128
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3
    kernel: str = "dot"  # 'dot' (tensor cores, any M) | 'gemv' (CUDA cores, block_m <= 4)
    asm: bool = True     # PTX nibble decode on GPU; the interpreter always runs the Triton spelling


def default_config(m: int, n: int, k: int, group: int, sms: int = 132) -> W4Config:
    """Single launch wherever it fills the GPU; split-K only when tiles x SMs would starve.

    M == 1: gemv at 8 rows per thread (32-row programs: 344 for N=11008, ~2.6 per SM, so the
    per-SM load balance is within 15%) and 2 chunks per iteration (32 KB of weights in flight
    per program, ~80 KB per SM, well past the ~25 KB that 4 TB/s x ~700 ns latency needs).
    M <= 64: the dot kernel; its per-weight decode does not grow with M (the gemv's FFMAs do).
    BLOCK_N 64 keeps the L2 re-reads of x (once per program) near the size of the weights; 32
    where 64 leaves SMs idle; split-K (atomics, plus zero-fill and cast launches) only below
    3/4 of the SMs. (At N=11008, BLOCK_N 64 gives 172 programs: 40 SMs run two. If the kernel
    turns out issue-bound, BLOCK_N 32 / 2 warps, 344 programs, balances better: in the sweep.)
    """
    bk = pow2_at_most(group, 128)
    if interpreting():
        return W4Config(pow2_cover(m, 16, 64), pow2_cover(n, 16, 128), bk, 1, 4, 1)
    if m == 1 and group % 32 == 0 and k >= CHUNK:  # (gemv has no split-K: narrow layers go on below)
        gk = 2 * CHUNK if k >= 2 * CHUNK else CHUNK
        if triton.cdiv(n, 16) >= sms // 2:  # the H200 sweep: 16 rows / 2 warps 2.19x, 32 / 4 1.45x (N=11008)
            return W4Config(1, 16, gk, 1, 2, 1, "gemv")
    if m <= 64:
        bm = pow2_cover(m, 16, 64)
        # the H200 sweep at M=16, N=11008: BLOCK_N 32 / 2 warps 1.64x, 64 / 4 warps 1.21x (better balance)
        bn = 64 if bm > 16 and triton.cdiv(m, bm) * triton.cdiv(n, 64) >= sms else 32
        tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
        split = 1
        while tiles * split < 3 * sms // 4 and k // (bk * split * 2) >= 4:
            split *= 2
        if split == 1 and group & (group - 1) == 0 and k % (2 * group) == 0 and group * 2 <= 256:
            bk = 2 * group  # two groups per iteration: 8 KB of weights per pipeline stage at BN 64
        return W4Config(bm, bn, bk, split, 4 if bn >= 64 else 2, 4)
    # the H200 sweep: BLOCK_K 128 where N >= K (8192^3, BERT FFN up: 0.55x against 0.44x), 64 where N < K
    return W4Config(128, 128, min(bk, 128 if n >= k else 64), 1, 8, 3)


# ---------------------------------------------------------------- decode helpers

# int32 word -> eight fp32 1024 + nibble_j: lop3 makes (nibble j, nibble j+4) fp16 pairs.
_NIBBLES_PTX = tl.constexpr("""{
.reg .b32 t0, t1, t2, t3, s1, s2, s3;
.reg .b16 h0, h1, h2, h3, h4, h5, h6, h7;
lop3.b32 t0, $8, 0x000F000F, 0x64006400, 0xEA;
shr.u32 s1, $8, 4;
lop3.b32 t1, s1, 0x000F000F, 0x64006400, 0xEA;
shr.u32 s2, $8, 8;
lop3.b32 t2, s2, 0x000F000F, 0x64006400, 0xEA;
shr.u32 s3, $8, 12;
lop3.b32 t3, s3, 0x000F000F, 0x64006400, 0xEA;
mov.b32 {h0, h4}, t0;
mov.b32 {h1, h5}, t1;
mov.b32 {h2, h6}, t2;
mov.b32 {h3, h7}, t3;
cvt.f32.f16 $0, h0;
cvt.f32.f16 $1, h1;
cvt.f32.f16 $2, h2;
cvt.f32.f16 $3, h3;
cvt.f32.f16 $4, h4;
cvt.f32.f16 $5, h5;
cvt.f32.f16 $6, h6;
cvt.f32.f16 $7, h7;
}""")
# byte (zero-extended) -> fp16/bf16 pair (1024 + lo, 1024 + hi) / (128 + lo, 128 + hi) in one register
_PAIR_F16_PTX = tl.constexpr("{ .reg .b32 u; mul.lo.u32 u, $1, 0x1001; "
                             "lop3.b32 $0, u, 0x000F000F, 0x64006400, 0xEA; }")
_PAIR_BF16_PTX = tl.constexpr("{ .reg .b32 u; mul.lo.u32 u, $1, 0x1001; "
                              "lop3.b32 $0, u, 0x000F000F, 0x43004300, 0xEA; }")


@triton.jit
def _nibbles(w, ASM: tl.constexpr):
    """int32 words -> eight fp32 tensors 1024 + q_j, q_j = bits 4j..4j+3 (k = 8 * word + j)."""
    if ASM:
        return tl.inline_asm_elementwise(_NIBBLES_PTX, "=r,=r,=r,=r,=r,=r,=r,=r,r", [w],
                                         dtype=(tl.float32,) * 8, is_pure=True, pack=1)
    else:
        n0, n4 = unpack_pair((w & 0x000F000F) | 0x64006400, False)
        n1, n5 = unpack_pair(((w >> 4) & 0x000F000F) | 0x64006400, False)
        n2, n6 = unpack_pair(((w >> 8) & 0x000F000F) | 0x64006400, False)
        n3, n7 = unpack_pair(((w >> 12) & 0x000F000F) | 0x64006400, False)
        return n0, n1, n2, n3, n4, n5, n6, n7


@triton.jit
def _byte_pairs(p, X_BF16: tl.constexpr, ASM: tl.constexpr):
    """uint8 [R, C] -> [R, 2C] in the activation dtype, k order, holding base + nibble."""
    b = p.to(tl.int32)
    if ASM:
        t = tl.inline_asm_elementwise(_PAIR_BF16_PTX if X_BF16 else _PAIR_F16_PTX, "=r,r", [b],
                                      dtype=tl.int32, is_pure=True, pack=1)
    else:
        t = ((b | (b << 12)) & 0x000F000F) | (0x43004300 if X_BF16 else 0x64006400)
    dt: tl.constexpr = tl.bfloat16 if X_BF16 else tl.float16
    lo = (t & 0xFFFF).to(tl.int16).to(dt, bitcast=True)
    hi = (t >> 16).to(tl.int16).to(dt, bitcast=True)
    return tl.interleave(lo, hi)


# ---------------------------------------------------------------- dot kernel

@triton.jit
def _w4a16_dot_kernel(x_ptr, w_ptr, s_ptr, z_ptr, bias_ptr, out_ptr, M, N, K,
                      stride_xm, stride_xk, stride_wn, stride_wk, stride_sn, stride_sg, stride_zn, stride_zg,
                      stride_om, stride_on,
                      GROUP: tl.constexpr, HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr,
                      EVEN_K: tl.constexpr, UPCAST: tl.constexpr, X_BF16: tl.constexpr, ASM: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    SUB: tl.constexpr = BLOCK_K if BLOCK_K <= GROUP else GROUP  # one scale per channel per sub-tile
    BASE: tl.constexpr = 128.0 if X_BF16 else 1024.0
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    grid_n = tl.cdiv(N, BLOCK_N)
    pid_m = pid // grid_n
    pid_n = pid % grid_n
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = tl.where(offs_m < M, offs_m, 0)
    rn = tl.where(offs_n < N, offs_n, 0)
    offs_k = tl.arange(0, SUB)
    offs_b = tl.arange(0, SUB // 2)
    # acc is out^T: weights are the A operand (decoded in registers, no per-MMA x-fragment copies)
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    # Split s takes K blocks s, s + SPLIT_K, ...: a loop from 0 with one trip count for every
    # program keeps the loop software-pipelined (a per-split start offset defeats the pipeliner).
    for it in range(0, tl.cdiv(K, BLOCK_K * SPLIT_K)):
        for j in tl.static_range(BLOCK_K // SUB):
            k0 = (it * SPLIT_K + pid_k) * BLOCK_K + j * SUB
            x_ptrs = x_ptr + rm[:, None] * stride_xm + (k0 + offs_k)[None, :] * stride_xk
            w_ptrs = w_ptr + rn[:, None] * stride_wn + (k0 // 2 + offs_b)[None, :] * stride_wk
            g = k0 // GROUP
            if EVEN_K:
                x = tl.load(x_ptrs)
                packed = tl.load(w_ptrs)
            else:  # past the end only in the last trip of some splits: zero x makes it contribute 0
                x = tl.load(x_ptrs, mask=(k0 + offs_k)[None, :] < K, other=0.0)
                packed = tl.load(w_ptrs, mask=(k0 // 2 + offs_b)[None, :] < K // 2, other=0)
                g = tl.minimum(g, K // GROUP - 1)
            s = tl.load(s_ptr + rn * stride_sn + g * stride_sg).to(tl.float32)[:, None]
            if HAS_ZERO:
                zb = BASE + tl.load(z_ptr + rn * stride_zn + g * stride_zg).to(tl.float32)[:, None]
            else:
                zb = tl.full([BLOCK_N, 1], BASE + 8.0, tl.float32)
            wb = _byte_pairs(packed, X_BF16, ASM)  # base + q; minus base + z is exactly q - z
            if UPCAST:  # the interpreter cannot do bf16 arithmetic or dots: same values in fp32
                wq = wb.to(tl.float32) - zb
                xt = tl.trans(x.to(tl.float32))
            else:
                wq = wb - zb.to(x.dtype)
                xt = tl.trans(x)
            if BLOCK_M <= 32:  # scale the fp32 result: a [BN, BM] FMA per group, none per weight
                acc += tl.dot(wq, xt) * s
            else:  # large tiles: the acc FMA would cost more than scaling weights in the MMA dtype
                acc = tl.dot(wq * s.to(wq.dtype), xt, acc)
    acc = tl.trans(acc)
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
    if SPLIT_K == 1:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rn).to(tl.float32)[None, :]
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        tl.atomic_add(out_ptrs, acc, mask=mask)


# ---------------------------------------------------------------- gemv kernel

@triton.jit
def _word_dot(t, xs, wv, xp, xm, ASM: tl.constexpr, X_BF16: tl.constexpr):
    """t += sum_j (1024 + q_j) x_j, xs += sum_j x_j over one word per lane (xp: its 4 x pairs)."""
    n0, n1, n2, n3, n4, n5, n6, n7 = _nibbles(wv, ASM)
    x0, x1 = unpack_pair(tl.load(xp, mask=xm, other=0), X_BF16)
    x2, x3 = unpack_pair(tl.load(xp + 1, mask=xm, other=0), X_BF16)
    x4, x5 = unpack_pair(tl.load(xp + 2, mask=xm, other=0), X_BF16)
    x6, x7 = unpack_pair(tl.load(xp + 3, mask=xm, other=0), X_BF16)
    t += n0 * x0
    t += n1 * x1
    t += n2 * x2
    t += n3 * x3
    t += n4 * x4
    t += n5 * x5
    t += n6 * x6
    t += n7 * x7
    xs += ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7))
    return t, xs


@triton.jit
def _gemv_row(acc, w0, w1, w2, w3, xp, row_ok, word, KW, s, zb, ASM: tl.constexpr, X_BF16: tl.constexpr,
              EVEN_K: tl.constexpr):
    t = tl.zeros(acc.shape, dtype=tl.float32)
    xs = tl.zeros(word.shape, dtype=tl.float32)
    if EVEN_K:
        t, xs = _word_dot(t, xs, w0, xp, row_ok, ASM, X_BF16)
        t, xs = _word_dot(t, xs, w1, xp + 4, row_ok, ASM, X_BF16)
        t, xs = _word_dot(t, xs, w2, xp + 8, row_ok, ASM, X_BF16)
        t, xs = _word_dot(t, xs, w3, xp + 12, row_ok, ASM, X_BF16)
    else:
        t, xs = _word_dot(t, xs, w0, xp, row_ok & (word < KW), ASM, X_BF16)
        t, xs = _word_dot(t, xs, w1, xp + 4, row_ok & (word + 1 < KW), ASM, X_BF16)
        t, xs = _word_dot(t, xs, w2, xp + 8, row_ok & (word + 2 < KW), ASM, X_BF16)
        t, xs = _word_dot(t, xs, w3, xp + 12, row_ok & (word + 3 < KW), ASM, X_BF16)
    return acc + s * (t - zb * xs)


@triton.jit
def _w4a16_gemv_kernel(x_ptr, w_ptr, s_ptr, z_ptr, bias_ptr, out_ptr, M, N, K,
                       stride_xm, stride_wn, stride_sn, stride_sg, stride_zn, stride_zg, stride_om,
                       GROUP: tl.constexpr, HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr,
                       X_BF16: tl.constexpr, ASM: tl.constexpr, EVEN_K: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """x_ptr/w_ptr are int32 views: x as fp16/bf16 pairs [M, K/2], w as words [N, K/8]."""
    LANES: tl.constexpr = 32
    CW: tl.constexpr = 4 * LANES  # words per row per chunk: 4 per lane (word 4 * lane + v)
    pid_n = tl.program_id(0)
    m0 = tl.program_id(1) * BLOCK_M
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rn = tl.where(offs_n < N, offs_n, 0)
    lane = tl.arange(0, LANES)[None, :]
    offs_w = tl.arange(0, CW)[None, :]
    KW = K // 8
    acc0 = tl.zeros([BLOCK_N, LANES], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_N, LANES], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_N, LANES], dtype=tl.float32)
    acc3 = tl.zeros([BLOCK_N, LANES], dtype=tl.float32)
    for kb in range(0, KW, BLOCK_K // 8):
        for c in tl.static_range(BLOCK_K // (8 * CW)):
            kw = kb + c * CW
            w_ptrs = w_ptr + rn[:, None] * stride_wn + kw + offs_w
            word = kw + 4 * lane
            g = word // (GROUP // 8)
            if EVEN_K:
                w = tl.load(w_ptrs)
            else:
                w = tl.load(w_ptrs, mask=kw + offs_w < KW, other=0)
                g = tl.minimum(g, K // GROUP - 1)
            # [BN, 128] -> four [BN, 32]: w_v[:, lane] is word 4 * lane + v (in-register split)
            wa, wb = tl.split(tl.reshape(w, [BLOCK_N, LANES, 2, 2]))
            w0, w2 = tl.split(wa)
            w1, w3 = tl.split(wb)
            s = tl.load(s_ptr + rn[:, None] * stride_sn + g * stride_sg).to(tl.float32)
            if HAS_ZERO:
                zb = 1024.0 + tl.load(z_ptr + rn[:, None] * stride_zn + g * stride_zg).to(tl.float32)
            else:
                zb = 1032.0
            xp = x_ptr + m0 * stride_xm + 4 * word
            acc0 = _gemv_row(acc0, w0, w1, w2, w3, xp, m0 < M, word, KW, s, zb, ASM, X_BF16, EVEN_K)
            if BLOCK_M > 1:
                acc1 = _gemv_row(acc1, w0, w1, w2, w3, xp + stride_xm, m0 + 1 < M, word, KW, s, zb,
                                 ASM, X_BF16, EVEN_K)
            if BLOCK_M > 2:
                acc2 = _gemv_row(acc2, w0, w1, w2, w3, xp + 2 * stride_xm, m0 + 2 < M, word, KW, s, zb,
                                 ASM, X_BF16, EVEN_K)
                acc3 = _gemv_row(acc3, w0, w1, w2, w3, xp + 3 * stride_xm, m0 + 3 < M, word, KW, s, zb,
                                 ASM, X_BF16, EVEN_K)
    store_lane_sums(acc0, m0, M, offs_n, rn, N, bias_ptr, out_ptr, stride_om, HAS_BIAS)
    if BLOCK_M > 1:
        store_lane_sums(acc1, m0 + 1, M, offs_n, rn, N, bias_ptr, out_ptr, stride_om, HAS_BIAS)
    if BLOCK_M > 2:
        store_lane_sums(acc2, m0 + 2, M, offs_n, rn, N, bias_ptr, out_ptr, stride_om, HAS_BIAS)
        store_lane_sums(acc3, m0 + 3, M, offs_n, rn, N, bias_ptr, out_ptr, stride_om, HAS_BIAS)


# ---------------------------------------------------------------- launcher

def _check(cfg: W4Config, group: int) -> None:
    if cfg.kernel == "gemv":
        if group % 32 or cfg.block_k % CHUNK or cfg.block_m not in (1, 2, 4) or cfg.block_n % cfg.num_warps:
            raise ValueError(f"w4a16 gemv: needs group_size % 32 == 0 (got {group}), block_k a multiple of "
                             f"{CHUNK}, block_m in 1/2/4 and block_n a multiple of num_warps; got {cfg}")
    elif cfg.kernel != "dot":
        raise ValueError(f"w4a16: kernel must be 'dot' or 'gemv', got {cfg.kernel!r}")
    elif cfg.block_k < 16 or not (group % cfg.block_k == 0 or (cfg.block_k % group == 0 and group & (group - 1) == 0)):
        raise ValueError(f"w4a16_linear: block_k={cfg.block_k} must be >= 16 and divide group_size={group} "
                         f"(or be a multiple of a power-of-two group_size)")


def w4a16_linear(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
                 group_size: int, bias: torch.Tensor | None = None,
                 config: W4Config | None = None) -> torch.Tensor:
    """x [M, K] fp16/bf16 @ dequant(qweight uint8 [N, K/2], scale [N, K/g], zero) ^T + bias -> [M, N]."""
    m, k = x.shape
    n = qweight.shape[0]
    if qweight.dtype != torch.uint8 or qweight.shape[1] * 2 != k or k % group_size:
        raise ValueError(f"w4a16_linear: qweight must be uint8 [N, K/2] with group_size | K; got "
                         f"{qweight.dtype} {tuple(qweight.shape)}, K={k}, group_size={group_size}")
    cfg = config or default_config(m, n, k, group_size)
    _check(cfg, group_size)
    z = zero if zero is not None else scale
    asm = cfg.asm and not interpreting()
    common = dict(GROUP=group_size, HAS_ZERO=zero is not None, HAS_BIAS=bias is not None,
                  X_BF16=x.dtype == torch.bfloat16, ASM=asm,
                  BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
                  num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    if cfg.kernel == "gemv":
        out = torch.empty(m, n, dtype=x.dtype, device=x.device)
        xw, ww = as_words(x), as_words(qweight)
        grid = (triton.cdiv(n, cfg.block_n), triton.cdiv(m, cfg.block_m))
        _w4a16_gemv_kernel[grid](
            xw, ww, scale, z, bias if bias is not None else out, out, m, n, k,
            xw.stride(0), ww.stride(0), scale.stride(0), scale.stride(1), z.stride(0), z.stride(1), out.stride(0),
            EVEN_K=k % cfg.block_k == 0, **common)
        return out
    split = max(1, min(cfg.split_k, k // cfg.block_k))
    if split > 1:
        out = torch.zeros(m, n, dtype=torch.float32, device=x.device)
    else:
        out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n), split)
    _w4a16_dot_kernel[grid](
        x, qweight, scale, z, bias if bias is not None else out, out, m, n, k,
        x.stride(0), x.stride(1), qweight.stride(0), qweight.stride(1), scale.stride(0), scale.stride(1),
        z.stride(0), z.stride(1), out.stride(0), out.stride(1),
        SPLIT_K=split, EVEN_K=k % (cfg.block_k * split) == 0,
        UPCAST=interpreting() and x.dtype == torch.bfloat16, **common)
    if split > 1:
        if bias is not None:
            out += bias.float()
        out = out.to(x.dtype)
    return out
