"""Codebook GEMV: y = x @ C[idx]^T for 2- or 4-bit indices into a per-layer scalar codebook.

For decode-sized batches the cost is reading the weights, so the indices stay packed (4 or
2 per byte, as `CodebookLinear` stores them) and are decoded in registers. Three kernels:

- `rows` (`_codebook_gemv_kernel`, any K): one program per (BLOCK_N channels, x row); the
  16/4 fp16 centroids are gathered from a table in L1. It re-reads the weights per x row and
  reduces across lanes every iteration: ~14-18 instructions per weight on sm_90.
- `lanes` (`_codebook_lanes_kernel`, K a multiple of 32/bits, M <= 4 per program): the
  W4A16 gemv layout (lanes along K, four int32 words = one 16-byte load per lane, warps along
  N, BLOCK_N / num_warps rows per thread sharing the unpacked x, one cross-lane reduction at
  the end) with FFMA chains. `decode`: 'gather' loads C[idx] per weight (an L1 load and a
  64-bit address each: ~7 instructions per weight, LSU-bound); 'select' (2-bit) keeps the 4
  centroids in registers: on GPU one PRMT per two weights picks the fp16 bytes out of the
  8-byte table (selector idx * 0x22 + 0x1010 via LOP3 + IMAD), ~4.2 instructions per weight;
  `asm=False` and the interpreter spell it as `tl.where` (~10 on GPU, with spills).
  'select16' (GPU) feeds the PRMT pairs to packed 16-bit FMAs with re-paired x: ~2.7 per
  weight, but each word's two 8-product partial sums round in the activation dtype (about
  1e-3 relative in fp16, more in bf16); the interpreter runs it as 'select'.
- `dot` (any M, BLOCK_M = 16 rows per tile, any K): decodes a [BLOCK_N, BLOCK_K] tile once
  for all rows and multiplies it as the A operand with x^T on tensor cores. 2-bit select
  builds the 16-bit pairs (C[c0], C[c1]) with one PRMT each from a table in x's dtype (~4.3
  instructions per weight at 64x256, 4 warps); gather and where-select cost ~10-12.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from slimbench.methods.quant.kernels._util import (as_words, interpreting, pow2_cover, store_lane_sums,
                                                  unpack_pair)

LANES_WORDS = 128  # int32 words per row per chunk in the lanes kernel: 4 per lane


@dataclass(frozen=True)
class GemvConfig:
    block_n: int = 64
    block_k: int = 256
    num_warps: int = 4
    num_stages: int = 2
    kernel: str = "rows"    # 'rows' | 'lanes' | 'dot'
    decode: str = "gather"  # 'gather' | 'select' | 'select16' (2-bit; lanes: fp16/bf16 partial sums per word)
    block_m: int = 1        # lanes: x rows per program (1, 2, 4); dot: 16
    asm: bool = True        # lanes + select: PRMT lookup on GPU (the interpreter runs tl.where)


def lanes_ok(bits: int, k: int) -> bool:
    """The lanes kernel reads whole int32 words of codes and x pairs: each word must be all in K."""
    return k % (32 // bits) == 0


def default_config(m: int, n: int, k: int, bits: int = 4) -> GemvConfig:
    """M == 1, 4-bit: the rows kernel, 32 x 256 tiles (the H200 sweep's best; the lanes kernel's
    gather decode was 0.64x of fp16). M == 1, 2-bit, K a multiple of a code word: lanes, 16-row
    programs of 2 warps (688 for N=11008, ~5 per SM: balanced within ~15%, 8 rows per thread),
    one chunk per iteration (8 KB of codes per program, ~40 KB in flight per SM), PRMT select.
    Otherwise the dot kernel: it decodes each weight once for all rows (the rows kernel
    decodes per x row and reduces across lanes every step)."""
    if interpreting():
        return GemvConfig(pow2_cover(n, 16, 256), pow2_cover(k, 16, 512), 4, 1)
    dec = "select" if bits == 2 else "gather"
    if m == 1 and bits == 4:  # the H200 sweep, N=11008 K=4096: rows 32 x 256 0.92x over fp16, lanes 0.64x
        return GemvConfig(32, 256, 4, 2, "rows", dec)
    if m == 1 and lanes_ok(bits, k):
        return GemvConfig(16, LANES_WORDS * (32 // bits), 2, 1, "lanes", dec)
    return GemvConfig(64, 128, 4, 3, "dot", dec, 16)  # the sweep at M=16: BLOCK_K 128 beat 256 at 2 and 4 bits


# ---------------------------------------------------------------- decode helpers

def _select2_ptx() -> str:
    """PTX: one int32 word of 2-bit codes + the fp16 table (C0 | C1 << 16, C2 | C3 << 16) -> 16
    fp32 centroids in k order. prmt picks bytes 2c, 2c+1 for codes c_j (half 0), c_(j+4) (half 1)."""
    lines = [".reg .b32 s, t, p;", ".reg .b16 " + ", ".join(f"h{i}" for i in range(16)) + ";"]
    for i, shift in enumerate((0, 2, 4, 6, 16, 18, 20, 22)):
        lo = i % 4 + 8 * (i // 4)
        lines += [f"shr.u32 s, $16, {shift};", "and.b32 t, s, 0x0303;", "mad.lo.u32 t, t, 0x22, 0x1010;",
                  "prmt.b32 p, $17, $18, t;", f"mov.b32 {{h{lo}, h{lo + 4}}}, p;"]
    lines += [f"cvt.f32.f16 ${i}, h{i};" for i in range(16)]
    return "{\n" + "\n".join(lines) + "\n}"


def _select2_fma_ptx(bf16: bool) -> str:
    """PTX for decode 'select16': as above, but the centroid pairs go straight into a packed
    16-bit FMA with x pairs (x_j, x_(j+4)) ($4..$11); the word's two partial sums (8 products
    each, rounded in the activation dtype) are then added in fp32 -> $0."""
    ty = "bf16" if bf16 else "f16"
    lines = [".reg .b32 s, t, p, a;", ".reg .b16 lo, hi;", ".reg .f32 fl, fh;"]
    for i, shift in enumerate((0, 2, 4, 6, 16, 18, 20, 22)):
        fma = f"mul.rn.{ty}x2 a, p, ${4 + i};" if i == 0 else f"fma.rn.{ty}x2 a, p, ${4 + i}, a;"
        lines += [f"shr.u32 s, $1, {shift};", "and.b32 t, s, 0x0303;", "mad.lo.u32 t, t, 0x22, 0x1010;",
                  "prmt.b32 p, $2, $3, t;", fma]
    lines += ["mov.b32 {lo, hi}, a;", f"cvt.f32.{ty} fl, lo;", f"cvt.f32.{ty} fh, hi;", "add.f32 $0, fl, fh;"]
    return "{\n" + "\n".join(lines) + "\n}"


_SELECT2_PTX = tl.constexpr(_select2_ptx())
_SELECT2_CONSTRAINTS = tl.constexpr("=r," * 16 + "r,r,r")
_SELECT2_FMA_F16 = tl.constexpr(_select2_fma_ptx(False))
_SELECT2_FMA_BF16 = tl.constexpr(_select2_fma_ptx(True))
_SELECT2_FMA_CONSTRAINTS = tl.constexpr("=r," + "r," * 10 + "r")
# x pairs (x_2c, x_2c+1), c = 0..7 -> (x_j, x_j+4), (x_8+j, x_12+j): the halves the PRMT decode pairs
_REPAIR_PTX = tl.constexpr("{\n" + "\n".join(
    f"prmt.b32 ${i}, ${8 + a}, ${8 + a + 2}, {sel};" for i, (a, sel) in enumerate(
        [(0, "0x5410"), (0, "0x7632"), (1, "0x5410"), (1, "0x7632"),
         (4, "0x5410"), (4, "0x7632"), (5, "0x5410"), (5, "0x7632")])) + "\n}")
_REPAIR_CONSTRAINTS = tl.constexpr("=r," * 8 + "r," * 7 + "r")
# One byte of 2-bit codes (zero-extended) -> two registers of 16-bit centroids: (C[c0], C[c1]),
# (C[c2], C[c3]); (b | b << 6) & 0x303 puts c0 and c1 in bytes 0 and 1 (no carries).
_BYTE_SELECT2_PTX = tl.constexpr("""{
.reg .b32 u, v, t0, t1;
shl.b32 u, $2, 6;
or.b32 u, u, $2;
and.b32 t0, u, 0x0303;
shr.u32 v, $2, 4;
shl.b32 u, $2, 2;
or.b32 u, u, v;
and.b32 t1, u, 0x0303;
mad.lo.u32 t0, t0, 0x22, 0x1010;
mad.lo.u32 t1, t1, 0x22, 0x1010;
prmt.b32 $0, $3, $4, t0;
prmt.b32 $1, $3, $4, t1;
}""")


@triton.jit
def _half(p, HI: tl.constexpr, dt: tl.constexpr):
    """Half HI of each int32 of p, bitcast to the 16-bit float type dt."""
    h = (p >> 16) if HI else (p & 0xFFFF)
    return h.to(tl.int16).to(dt, bitcast=True)


@triton.jit
def _centroid(idx, cb_ptr, c0, c1, c2, c3, SELECT: tl.constexpr):
    """idx (int32, 0..2**bits-1) -> fp32 centroid: a table load, or a 2-bit where-select."""
    if SELECT:
        return tl.where(idx >= 2, tl.where(idx == 3, c3, c2), tl.where(idx == 1, c1, c0))
    else:
        return tl.load(cb_ptr + idx).to(tl.float32)


@triton.jit
def _word_dot(acc, wv, xp, xm, cb_ptr, c0, c1, c2, c3, tab_lo, tab_hi,
              BITS: tl.constexpr, SELECT: tl.constexpr, ASM: tl.constexpr, X_BF16: tl.constexpr):
    """acc += sum_j C[code_j] x_j over one int32 word per lane (32 / BITS codes, k order)."""
    PER: tl.constexpr = 32 // BITS
    if SELECT and ASM == 2:  # 2-bit only: 8 x pairs per word
        xr = tl.inline_asm_elementwise(
            _REPAIR_PTX, _REPAIR_CONSTRAINTS,
            [tl.load(xp, mask=xm, other=0), tl.load(xp + 1, mask=xm, other=0), tl.load(xp + 2, mask=xm, other=0),
             tl.load(xp + 3, mask=xm, other=0), tl.load(xp + 4, mask=xm, other=0), tl.load(xp + 5, mask=xm, other=0),
             tl.load(xp + 6, mask=xm, other=0), tl.load(xp + 7, mask=xm, other=0)],
            dtype=(tl.int32,) * 8, is_pure=True, pack=1)
        acc += tl.inline_asm_elementwise(
            _SELECT2_FMA_BF16 if X_BF16 else _SELECT2_FMA_F16, _SELECT2_FMA_CONSTRAINTS,
            [wv, tab_lo, tab_hi, xr[0], xr[1], xr[2], xr[3], xr[4], xr[5], xr[6], xr[7]],
            dtype=tl.float32, is_pure=True, pack=1)
    elif SELECT and ASM:
        v = tl.inline_asm_elementwise(_SELECT2_PTX, _SELECT2_CONSTRAINTS, [wv, tab_lo, tab_hi],
                                      dtype=(tl.float32,) * 16, is_pure=True, pack=1)
        for p in tl.static_range(PER // 2):
            xa, xb = unpack_pair(tl.load(xp + p, mask=xm, other=0), X_BF16)
            acc += v[2 * p] * xa
            acc += v[2 * p + 1] * xb
    else:
        MASK: tl.constexpr = (1 << BITS) - 1
        for p in tl.static_range(PER // 2):
            xa, xb = unpack_pair(tl.load(xp + p, mask=xm, other=0), X_BF16)
            acc += _centroid((wv >> (2 * p * BITS)) & MASK, cb_ptr, c0, c1, c2, c3, SELECT) * xa
            acc += _centroid((wv >> ((2 * p + 1) * BITS)) & MASK, cb_ptr, c0, c1, c2, c3, SELECT) * xb
    return acc


@triton.jit
def _lanes_row(acc, w0, w1, w2, w3, xp, row_ok, word, KW, cb_ptr, c0, c1, c2, c3, tab_lo, tab_hi,
               BITS: tl.constexpr, SELECT: tl.constexpr, ASM: tl.constexpr, X_BF16: tl.constexpr,
               EVEN_K: tl.constexpr):
    XW: tl.constexpr = 16 // BITS  # x pairs per code word
    m0 = row_ok if EVEN_K else row_ok & (word < KW)
    m1 = row_ok if EVEN_K else row_ok & (word + 1 < KW)
    m2 = row_ok if EVEN_K else row_ok & (word + 2 < KW)
    m3 = row_ok if EVEN_K else row_ok & (word + 3 < KW)
    acc = _word_dot(acc, w0, xp, m0, cb_ptr, c0, c1, c2, c3, tab_lo, tab_hi, BITS, SELECT, ASM, X_BF16)
    acc = _word_dot(acc, w1, xp + XW, m1, cb_ptr, c0, c1, c2, c3, tab_lo, tab_hi, BITS, SELECT, ASM, X_BF16)
    acc = _word_dot(acc, w2, xp + 2 * XW, m2, cb_ptr, c0, c1, c2, c3, tab_lo, tab_hi, BITS, SELECT, ASM, X_BF16)
    acc = _word_dot(acc, w3, xp + 3 * XW, m3, cb_ptr, c0, c1, c2, c3, tab_lo, tab_hi, BITS, SELECT, ASM, X_BF16)
    return acc


@triton.jit
def _centroids(cb_ptr, tab_ptr, SELECT: tl.constexpr, ASM: tl.constexpr):
    """The 2-bit select decode's table, loaded once per program: four fp32 centroids (tl.where
    spelling) or two int32 words of packed 16-bit centroids (PRMT); placeholders otherwise."""
    c0 = 0.0
    c1 = 0.0
    c2 = 0.0
    c3 = 0.0
    tab_lo = 0
    tab_hi = 0
    if SELECT:
        if ASM:
            tab_lo = tl.load(tab_ptr)
            tab_hi = tl.load(tab_ptr + 1)
        else:
            c0 = tl.load(cb_ptr).to(tl.float32)
            c1 = tl.load(cb_ptr + 1).to(tl.float32)
            c2 = tl.load(cb_ptr + 2).to(tl.float32)
            c3 = tl.load(cb_ptr + 3).to(tl.float32)
    return c0, c1, c2, c3, tab_lo, tab_hi


@triton.jit
def _codebook_lanes_kernel(x_ptr, c_ptr, cb_ptr, tab_ptr, bias_ptr, out_ptr, M, N, KW, stride_xm, stride_cn,
                           stride_om, BITS: tl.constexpr, HAS_BIAS: tl.constexpr, SELECT: tl.constexpr,
                           ASM: tl.constexpr, X_BF16: tl.constexpr, EVEN_K: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr):
    """x_ptr/c_ptr/tab_ptr are int32 views: x pairs [M, K/2], code words [N, KW], fp16 table pairs."""
    LANES: tl.constexpr = 32
    CW: tl.constexpr = 4 * LANES
    XW: tl.constexpr = 16 // BITS
    pid_n = tl.program_id(0)
    r0 = tl.program_id(1) * BLOCK_M
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rn = tl.where(offs_n < N, offs_n, 0)
    lane = tl.arange(0, LANES)[None, :]
    offs_w = tl.arange(0, CW)[None, :]
    c0, c1, c2, c3, tab_lo, tab_hi = _centroids(cb_ptr, tab_ptr, SELECT, ASM)
    acc0 = tl.zeros([BLOCK_N, LANES], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_N, LANES], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_N, LANES], dtype=tl.float32)
    acc3 = tl.zeros([BLOCK_N, LANES], dtype=tl.float32)
    for kb in range(0, KW, BLOCK_W):
        for ch in tl.static_range(BLOCK_W // CW):
            kw = kb + ch * CW
            c_ptrs = c_ptr + rn[:, None] * stride_cn + kw + offs_w
            if EVEN_K:
                w = tl.load(c_ptrs)
            else:
                w = tl.load(c_ptrs, mask=kw + offs_w < KW, other=0)
            wa, wb = tl.split(tl.reshape(w, [BLOCK_N, LANES, 2, 2]))  # w_v[:, lane] = word 4 * lane + v
            w0, w2 = tl.split(wa)
            w1, w3 = tl.split(wb)
            word = kw + 4 * lane
            xp = x_ptr + r0 * stride_xm + XW * word
            acc0 = _lanes_row(acc0, w0, w1, w2, w3, xp, r0 < M, word, KW, cb_ptr, c0, c1, c2, c3, tab_lo, tab_hi,
                              BITS, SELECT, ASM, X_BF16, EVEN_K)
            if BLOCK_M > 1:
                acc1 = _lanes_row(acc1, w0, w1, w2, w3, xp + stride_xm, r0 + 1 < M, word, KW, cb_ptr,
                                  c0, c1, c2, c3, tab_lo, tab_hi, BITS, SELECT, ASM, X_BF16, EVEN_K)
            if BLOCK_M > 2:
                acc2 = _lanes_row(acc2, w0, w1, w2, w3, xp + 2 * stride_xm, r0 + 2 < M, word, KW, cb_ptr,
                                  c0, c1, c2, c3, tab_lo, tab_hi, BITS, SELECT, ASM, X_BF16, EVEN_K)
                acc3 = _lanes_row(acc3, w0, w1, w2, w3, xp + 3 * stride_xm, r0 + 3 < M, word, KW, cb_ptr,
                                  c0, c1, c2, c3, tab_lo, tab_hi, BITS, SELECT, ASM, X_BF16, EVEN_K)
    store_lane_sums(acc0, r0, M, offs_n, rn, N, bias_ptr, out_ptr, stride_om, HAS_BIAS)
    if BLOCK_M > 1:
        store_lane_sums(acc1, r0 + 1, M, offs_n, rn, N, bias_ptr, out_ptr, stride_om, HAS_BIAS)
    if BLOCK_M > 2:
        store_lane_sums(acc2, r0 + 2, M, offs_n, rn, N, bias_ptr, out_ptr, stride_om, HAS_BIAS)
        store_lane_sums(acc3, r0 + 3, M, offs_n, rn, N, bias_ptr, out_ptr, stride_om, HAS_BIAS)


@triton.jit
def _codebook_dot_kernel(x_ptr, c_ptr, cb_ptr, tab_ptr, bias_ptr, out_ptr, M, N, K, KB, stride_xm, stride_cn,
                         stride_om, BITS: tl.constexpr, HAS_BIAS: tl.constexpr, SELECT: tl.constexpr,
                         ASM: tl.constexpr, UPCAST: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """out^T tile = C[idx] [BLOCK_N, BLOCK_K] @ x^T: the weights are decoded once for all rows."""
    PER: tl.constexpr = 8 // BITS
    MASK: tl.constexpr = (1 << BITS) - 1
    pid_n = tl.program_id(0)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = tl.where(offs_m < M, offs_m, 0)
    rn = tl.where(offs_n < N, offs_n, 0)
    offs_k = tl.arange(0, BLOCK_K)
    offs_b = tl.arange(0, BLOCK_K // PER)
    c0, c1, c2, c3, tab_lo, tab_hi = _centroids(cb_ptr, tab_ptr, SELECT, ASM)
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(x_ptr + rm[:, None] * stride_xm + (k0 + offs_k)[None, :], mask=(k0 + offs_k)[None, :] < K,
                    other=0.0)
        bidx = k0 // PER + offs_b
        p = tl.load(c_ptr + rn[:, None] * stride_cn + bidx[None, :], mask=bidx[None, :] < KB, other=0).to(tl.int32)
        if SELECT and ASM:  # PRMT from the table in x's dtype: two weights per PRMT, no conversions
            p01, p23 = tl.inline_asm_elementwise(_BYTE_SELECT2_PTX, "=r,=r,r,r,r", [p, tab_lo, tab_hi],
                                                 dtype=(tl.int32, tl.int32), is_pure=True, pack=1)
            w = tl.interleave(tl.interleave(_half(p01, 0, x.dtype), _half(p23, 0, x.dtype)),
                              tl.interleave(_half(p01, 1, x.dtype), _half(p23, 1, x.dtype)))
        else:
            if BITS == 4:
                idx = tl.interleave(p & MASK, p >> 4)
            else:  # four 2-bit fields: interleave(interleave(f0, f2), interleave(f1, f3)) is k order
                idx = tl.interleave(tl.interleave(p & MASK, (p >> 4) & MASK), tl.interleave((p >> 2) & MASK, p >> 6))
            w = _centroid(idx, cb_ptr, c0, c1, c2, c3, SELECT)
        if UPCAST:  # the interpreter cannot dot bf16
            acc = tl.dot(w.to(tl.float32), tl.trans(x.to(tl.float32)), acc)
        else:
            acc = tl.dot(w.to(x.dtype), tl.trans(x), acc)
    acc = tl.trans(acc)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn).to(tl.float32)[None, :]
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.jit
def _codebook_gemv_kernel(x_ptr, c_ptr, cb_ptr, bias_ptr, out_ptr, N, K, KB,
                          stride_xm, stride_cn, stride_om,
                          BITS: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_K: tl.constexpr):
    pid_n = tl.program_id(0)
    row = tl.program_id(1)
    PER: tl.constexpr = 8 // BITS
    MASK: tl.constexpr = (1 << BITS) - 1
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rn = tl.where(offs_n < N, offs_n, 0)
    offs_k = tl.arange(0, BLOCK_K)
    offs_b = tl.arange(0, BLOCK_K // PER)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(x_ptr + row * stride_xm + k0 + offs_k, mask=k0 + offs_k < K, other=0.0).to(tl.float32)
        bidx = k0 // PER + offs_b
        p = tl.load(c_ptr + rn[:, None] * stride_cn + bidx[None, :], mask=bidx[None, :] < KB, other=0)
        if BITS == 4:
            idx = tl.interleave(p & MASK, p >> 4)
        else:  # four 2-bit fields: interleave(interleave(f0, f2), interleave(f1, f3)) is k order
            idx = tl.interleave(tl.interleave(p & MASK, (p >> 4) & MASK),
                                tl.interleave((p >> 2) & MASK, p >> 6))
        w = tl.load(cb_ptr + idx.to(tl.int32)).to(tl.float32)
        acc += tl.sum(w * x[None, :], axis=1)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn).to(tl.float32)
    tl.store(out_ptr + row * stride_om + offs_n, acc.to(out_ptr.dtype.element_ty), mask=offs_n < N)


def codebook_gemv(x: torch.Tensor, codes: torch.Tensor, codebook: torch.Tensor, bits: int,
                  bias: torch.Tensor | None = None, config: GemvConfig | None = None) -> torch.Tensor:
    """x [M, K] @ codebook[unpack(codes)]^T + bias -> [M, N] in x's dtype (M small)."""
    m, k = x.shape
    n, kb = codes.shape
    if bits not in (2, 4) or codebook.numel() != 2 ** bits or kb != triton.cdiv(k * bits, 8):
        raise ValueError(f"codebook_gemv: want {bits in (2, 4) and bits or '2 or 4'}-bit codes [N, ceil(K*bits/8)] "
                         f"and a scalar codebook of 2**bits entries; got codes {tuple(codes.shape)}, K={k}, "
                         f"codebook {tuple(codebook.shape)}")
    cfg = config or default_config(m, n, k, bits)
    select = cfg.decode in ("select", "select16")
    if cfg.kernel not in ("rows", "lanes", "dot") or cfg.decode not in ("gather", "select", "select16") \
            or (select and bits != 2):
        raise ValueError(f"codebook_gemv: kernel rows/lanes/dot, decode gather/select/select16 (select: 2-bit "
                         f"only); got {cfg}")
    if cfg.kernel == "lanes" and (not lanes_ok(bits, k) or cfg.block_m not in (1, 2, 4)
                                  or cfg.block_k % (LANES_WORDS * 32 // bits) or cfg.block_n % cfg.num_warps):
        raise ValueError(f"codebook_gemv lanes: needs K % {32 // bits} == 0 (got {k}), block_m in 1/2/4, block_k "
                         f"a multiple of {LANES_WORDS * 32 // bits}, block_n a multiple of num_warps; got {cfg}")
    x = x if x.stride(1) == 1 else x.contiguous()
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    table = codebook.reshape(-1).contiguous()
    common = dict(BITS=bits, HAS_BIAS=bias is not None, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    bias_arg = bias if bias is not None else out
    if cfg.kernel == "lanes":
        asm = (2 if cfg.decode == "select16" else 1) if select and cfg.asm and not interpreting() else 0
        xw, cw = as_words(x), as_words(codes)
        tab = as_words(table.to(x.dtype if asm == 2 else torch.float16)) if asm else table
        kw = cw.shape[1]
        block_w = cfg.block_k * bits // 32
        grid = (triton.cdiv(n, cfg.block_n), triton.cdiv(m, cfg.block_m))
        _codebook_lanes_kernel[grid](
            xw, cw, table, tab, bias_arg, out, m, n, kw, xw.stride(0), cw.stride(0), out.stride(0),
            SELECT=select, ASM=asm, X_BF16=x.dtype == torch.bfloat16, EVEN_K=kw % block_w == 0,
            BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_W=block_w, **common)
    elif cfg.kernel == "dot":
        asm = select and cfg.asm and not interpreting()
        tab = as_words(table.to(x.dtype)) if asm else table  # x-dtype centroids: PRMT output feeds the MMA
        grid = (triton.cdiv(n, cfg.block_n), triton.cdiv(m, cfg.block_m))
        _codebook_dot_kernel[grid](
            x, codes, table, tab, bias_arg, out, m, n, k, kb, x.stride(0), codes.stride(0), out.stride(0),
            SELECT=select, ASM=asm, UPCAST=interpreting() and x.dtype == torch.bfloat16,
            BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, **common)
    else:
        grid = (triton.cdiv(n, cfg.block_n), m)
        _codebook_gemv_kernel[grid](
            x, codes, table, bias_arg, out, n, k, kb, x.stride(0), codes.stride(0), out.stride(0),
            BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, **common)
    return out
