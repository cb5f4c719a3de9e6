"""2:4 sparse weights on the sparse tensor cores: a CUDA C++ GEMM issuing `mma.sp` (m16n8k32, fp16 or
bf16 in, fp32 accumulate), the weight's metadata converted once into the layout the instruction reads.

The stored format is unchanged (`storage.to_nm`: `values` [N, K/2] in group order, `positions` 2-bit
slots packed 4 to a byte). `to_sparse_mma` derives, in plain torch on any device:
- `values` [N, K/2] fp16/bf16: the stored values as they are (each group's pair in ascending slot
  order, which `to_nm` already gives). Rows n..n+15, compressed columns c..c+15 of this matrix are
  the A operand of one m16n8k32 `mma.sp` (the dense m16n8k16 A fragment layout; PTX ISA, "Matrix
  fragments for sparse mma.m16n8k32 with .f16/.bf16": a0,a1 = group `t` of row `g`, a2,a3 = row g+8,
  a4..a7 = group 4+t, where g = lane / 4 and t = lane % 4);
- `meta` int32 [ceil(N/128)*8, K/64, 32]: one 32-bit word per lane of the warp for every 16-row x
  64-column block of W, so each thread loads exactly the register it hands to `mma.sp` (below).

Metadata, as PTX ISA 9.7.14.6 ("Sparse matrix storage"; "Matrix fragments for sparse
mma.m16n8k32 with .f16/.bf16", its metadata figure) defines it for m16n8k32 with 16-bit types:
each group of 4 weights has a 4-bit nibble `i0 | i1 << 2`, the slots of its first and second
kept value (i0 < i1; 0b0000, 0b0101, 0b1010, 0b1111 are invalid); the 16 x 32 tile of one
instruction has 8 nibbles per row; with sparsity selector s, lanes 4g + 2s + h (h = 0, 1) supply the
metadata: bits 0..15 hold row g's nibbles for columns 16h..16h+15 (group j at bits 4j), bits
16..31 row g+8's. The kernel issues two instructions per 64 columns, the first with selector 0
(lanes 4g+0, 4g+1) and the second with selector 1 (lanes 4g+2, 4g+3), so every lane's word of a
16x64 block is used once: word[rb, kb, lane = 4g + 2s + h] covers rows 16rb+g and 16rb+g+8, columns
64kb + 32s + 16h .. +15. Rows past N are padded to a whole number of 128 with a valid nibble
(0b0100), so a 128-row tile never reads undefined metadata.

`decode_emulated` reads (values, meta) back the way the hardware does, lane by lane and register
by register (the CPU tests' check that the layout is the one written here); only a GPU run can
say that the hardware agrees (`tests/test_kernels_nm_sparse_mma.py`, the GPU test).

The CUDA source is two parts: `KERNEL_SRC` needs no torch headers (so `benchmarks/compile_sm90.py`
compiles it with nvcc on a machine without a GPU), `BINDING_SRC` wraps it for torch. `build()`
compiles both with `torch.utils.cpp_extension.load_inline` on first use, on a CUDA machine only.
Unmeasured on a GPU so far: see benchmarks/NOTES-gpu.md.
"""
from __future__ import annotations

import hashlib
from typing import NamedTuple

import torch

from slimbench.methods.common import storage

K_TILE = 64  # columns of W per pipeline stage: two m16n8k32 instructions (selectors 0 and 1)
META_ROWS = 128  # metadata rows are padded to a multiple of the tallest tile
VALID_PAD = 0b0100  # nibble of padded rows: slots 0 and 1 (values there are zero)
INVALID_NIBBLES = (0b0000, 0b0101, 0b1010, 0b1111)  # equal slots: undefined behaviour (PTX ISA)

# (BN weight rows, BM input rows, warps along N, warps along M, pipeline stages) per config; the
# launcher in KERNEL_SRC has the same table.
CONFIGS = {0: (128, 128, 4, 2, 3), 1: (128, 64, 4, 2, 4), 2: (64, 16, 4, 1, 6)}

KERNEL_SRC = r"""
// 2:4 sparse x dense GEMM on the sparse tensor cores: y[M, N] = x[M, K] @ W[N, K]^T (+ bias).
// W is the mma.sp A operand (rows = output features), x the B operand ("col": x rows are K-contiguous),
// so each instruction makes a 16 (n) x 8 (m) tile of y^T. No torch headers: nvcc compiles this alone.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

#ifndef SLIM_MMA_SP
#define SLIM_MMA_SP "mma.sp::ordered_metadata"  // our metadata is ordered (i0 < i1); "mma.sp" also accepts it
#endif

namespace slim_nm24 {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy; with pred false nothing is read and the 16 bytes are zero-filled.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool pred) {
    int bytes = pred ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" :: "n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

// d += A (16 x 32, 2:4, compressed to 16 x 16: a) * B (32 x 8: b); e: this lane's metadata word,
// read by the hardware from lanes 4g + 2*SEL and 4g + 2*SEL + 1 only.
template <bool BF16, int SEL>
__device__ __forceinline__ void mma_sp(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[4], uint32_t e) {
    if constexpr (BF16) {
        asm volatile(SLIM_MMA_SP ".sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11}, {%0,%1,%2,%3}, %12, %13;\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]),
                       "r"(e), "n"(SEL));
    } else {
        asm volatile(SLIM_MMA_SP ".sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11}, {%0,%1,%2,%3}, %12, %13;\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]),
                       "r"(e), "n"(SEL));
    }
}

template <bool BF16> __device__ __forceinline__ uint16_t to_bits(float f);
template <> __device__ __forceinline__ uint16_t to_bits<false>(float f) { return __half_as_ushort(__float2half_rn(f)); }
template <> __device__ __forceinline__ uint16_t to_bits<true>(float f) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

constexpr int A_LD = 32 + 8;  // halves per weight row in shared memory: 64 B of values + 16 B (no bank conflicts)
constexpr int B_LD = 64 + 8;  // halves per input row: 128 B + 16 B

template <int BN, int BM, int STAGES>
constexpr size_t smem_bytes() { return (size_t)STAGES * (BN * A_LD * 2 + BM * B_LD * 2 + BN / 16 * 32 * 4); }

// One block: a BN x BM tile of y^T; warps in a WARPS_N x WARPS_M grid, each a (BN/WARPS_N) x (BM/WARPS_M)
// tile of 16 x 8 instructions. K advances 64 columns per stage (cp.async, STAGES deep): 32 compressed
// values per weight row, 64 inputs per x row, one metadata word per lane per 16 weight rows.
template <int BN, int BM, int WARPS_N, int WARPS_M, int STAGES, bool BF16>
__global__ void __launch_bounds__(WARPS_N * WARPS_M * 32)
nm24_mma_kernel(const uint16_t* __restrict__ x, const uint16_t* __restrict__ v, const uint32_t* __restrict__ meta,
                const float* __restrict__ bias, uint16_t* __restrict__ y, int M, int N, int K) {
    constexpr int THREADS = WARPS_N * WARPS_M * 32;
    constexpr int WN = BN / WARPS_N, WM = BM / WARPS_M;
    constexpr int TN = WN / 16, TM = WM / 8;
    static_assert(WN % 16 == 0 && WM % 8 == 0 && 128 % BN == 0, "tile shape");
    constexpr int A_STAGE = BN * A_LD, B_STAGE = BM * B_LD, E_STAGE = BN / 16 * 32;

    extern __shared__ __align__(16) unsigned char smem[];
    uint16_t* sA = reinterpret_cast<uint16_t*>(smem);
    uint16_t* sB = sA + STAGES * A_STAGE;
    uint32_t* sE = reinterpret_cast<uint32_t*>(sB + STAGES * B_STAGE);

    const int n0 = blockIdx.x * BN, m0 = blockIdx.y * BM;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wn = warp % WARPS_N, wm = warp / WARPS_N;
    const int KT = K / 64, KH = K / 2;

    auto load_stage = [&](int stage, int kt) {
        uint16_t* a_dst = sA + stage * A_STAGE;
        for (int c = tid; c < BN * 4; c += THREADS) {  // weight values: 4 x 16 B per row
            int r = c >> 2, col = (c & 3) * 8, n = n0 + r;
            bool ok = n < N;
            cp_async16(smem_addr(a_dst + r * A_LD + col), v + (size_t)(ok ? n : 0) * KH + kt * 32 + col, ok);
        }
        uint16_t* b_dst = sB + stage * B_STAGE;
        for (int c = tid; c < BM * 8; c += THREADS) {  // inputs: 8 x 16 B per row
            int r = c >> 3, col = (c & 7) * 8, m = m0 + r;
            bool ok = m < M;
            cp_async16(smem_addr(b_dst + r * B_LD + col), x + (size_t)(ok ? m : 0) * K + kt * 64 + col, ok);
        }
        uint32_t* e_dst = sE + stage * E_STAGE;
        for (int c = tid; c < BN / 16 * 8; c += THREADS) {  // metadata: 32 words per 16 rows (rows padded to 128)
            int rb = c >> 3, w = (c & 7) * 4;
            cp_async16(smem_addr(e_dst + rb * 32 + w), meta + ((size_t)(n0 / 16 + rb) * KT + kt) * 32 + w, true);
        }
    };

    float acc[TN][TM][4];
#pragma unroll
    for (int i = 0; i < TN; ++i)
#pragma unroll
        for (int j = 0; j < TM; ++j)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[i][j][c] = 0.f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < KT) load_stage(s, s);
        cp_async_commit();
    }
    for (int kt = 0; kt < KT; ++kt) {
        cp_async_wait<STAGES - 2>();  // stage kt has landed
        __syncthreads();              // ... for every thread, and stage kt-1 is no longer read
        if (kt + STAGES - 1 < KT) load_stage((kt + STAGES - 1) % STAGES, kt + STAGES - 1);
        cp_async_commit();
        const int st = kt % STAGES;
        const uint16_t* a_s = sA + st * A_STAGE;
        const uint16_t* b_s = sB + st * B_STAGE;
        const uint32_t* e_s = sE + st * E_STAGE;
        uint32_t e[TN];
#pragma unroll
        for (int i = 0; i < TN; ++i) e[i] = e_s[(wn * TN + i) * 32 + lane];
#pragma unroll
        for (int sub = 0; sub < 2; ++sub) {  // columns 32*sub .. +31 of the stage: sparsity selector = sub
            uint32_t a[TN][4], b[TM][4];
#pragma unroll
            for (int i = 0; i < TN; ++i)  // lanes 0-15: rows 0-15 at compressed col 0; lanes 16-31: col 8
                ldmatrix_x4(a[i], smem_addr(a_s + (wn * WN + i * 16 + (lane & 15)) * A_LD + sub * 16 +
                                            (lane >> 4) * 8));
#pragma unroll
            for (int j = 0; j < TM; ++j)  // matrix q = lanes 8q..8q+7: x rows 0-7 at k offset 8q
                ldmatrix_x4(b[j], smem_addr(b_s + (wm * WM + j * 8 + (lane & 7)) * B_LD + sub * 32 + (lane >> 3) * 8));
#pragma unroll
            for (int i = 0; i < TN; ++i)
#pragma unroll
                for (int j = 0; j < TM; ++j) {
                    if (sub == 0) mma_sp<BF16, 0>(acc[i][j], a[i], b[j], e[i]);
                    else mma_sp<BF16, 1>(acc[i][j], a[i], b[j], e[i]);
                }
        }
    }
    cp_async_wait<0>();

    // c0, c1: y^T row g, columns 2t, 2t+1; c2, c3: row g + 8 (g = lane / 4, t = lane % 4)
#pragma unroll
    for (int i = 0; i < TN; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int n = n0 + wn * WN + i * 16 + (lane >> 2) + 8 * h;
            if (n >= N) continue;
            const float bn = bias ? bias[n] : 0.f;
#pragma unroll
            for (int j = 0; j < TM; ++j)
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                    const int m = m0 + wm * WM + j * 8 + (lane & 3) * 2 + c;
                    if (m < M) y[(size_t)m * N + n] = to_bits<BF16>(acc[i][j][2 * h + c] + bn);
                }
        }
}

template <int BN, int BM, int WARPS_N, int WARPS_M, int STAGES, bool BF16>
cudaError_t launch(const void* x, const void* v, const uint32_t* meta, const float* bias, void* y, int M, int N, int K,
                   cudaStream_t stream) {
    auto kern = nm24_mma_kernel<BN, BM, WARPS_N, WARPS_M, STAGES, BF16>;
    constexpr size_t smem = smem_bytes<BN, BM, STAGES>();
    static unsigned long long raised = 0;  // devices whose dynamic shared-memory limit is raised for this kernel
    int dev = 0;
    cudaGetDevice(&dev);
    if (dev >= 64 || !(raised >> dev & 1ull)) {
        cudaError_t err = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (err != cudaSuccess) return err;
        if (dev < 64) raised |= 1ull << dev;
    }
    dim3 grid((N + BN - 1) / BN, (M + BM - 1) / BM);
    kern<<<grid, WARPS_N * WARPS_M * 32, smem, stream>>>(
        static_cast<const uint16_t*>(x), static_cast<const uint16_t*>(v), meta, bias, static_cast<uint16_t*>(y),
        M, N, K);
    return cudaGetLastError();
}

template <bool BF16>
cudaError_t launch_config(int config, const void* x, const void* v, const uint32_t* meta, const float* bias, void* y,
                          int M, int N, int K, cudaStream_t s) {
    switch (config) {  // the table CONFIGS in nm_sparse_mma.py
        case 0: return launch<128, 128, 4, 2, 3, BF16>(x, v, meta, bias, y, M, N, K, s);
        case 1: return launch<128, 64, 4, 2, 4, BF16>(x, v, meta, bias, y, M, N, K, s);
        case 2: return launch<64, 16, 4, 1, 6, BF16>(x, v, meta, bias, y, M, N, K, s);
        default: return cudaErrorInvalidValue;
    }
}

}  // namespace slim_nm24

// x [M, K], values [N, K/2] (fp16 or bf16, as bf16 says), meta [ceil(N/128)*8, K/64, 32], bias fp32 [N] or
// null, y [M, N]; all contiguous, K a multiple of 64. Returns a cudaError_t.
extern "C" int slim_nm24_mma_launch(const void* x, const void* values, const void* meta, const float* bias, void* y,
                                    int M, int N, int K, int bf16, int config, void* stream) {
    auto s = static_cast<cudaStream_t>(stream);
    auto e = static_cast<const uint32_t*>(meta);
    return bf16 ? slim_nm24::launch_config<true>(config, x, values, e, bias, y, M, N, K, s)
                : slim_nm24::launch_config<false>(config, x, values, e, bias, y, M, N, K, s);
}
"""

BINDING_SRC = r"""
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

extern "C" int slim_nm24_mma_launch(const void* x, const void* values, const void* meta, const float* bias, void* y,
                                    int M, int N, int K, int bf16, int config, void* stream);

// bias: fp32 [N], or an empty tensor for none
torch::Tensor nm24_mma(torch::Tensor x, torch::Tensor values, torch::Tensor meta, torch::Tensor bias, int64_t config) {
    TORCH_CHECK(x.is_cuda() && x.dim() == 2 && x.is_contiguous(), "x: a contiguous 2-d CUDA tensor");
    TORCH_CHECK(x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16, "x: fp16 or bf16");
    TORCH_CHECK(values.scalar_type() == x.scalar_type() && values.is_contiguous() && values.dim() == 2,
                "values: contiguous [N, K/2] in x's dtype");
    TORCH_CHECK(meta.scalar_type() == at::kInt && meta.is_contiguous() && meta.dim() == 3,
                "meta: contiguous int32 3-d");
    const int64_t M = x.size(0), K = x.size(1), N = values.size(0);
    TORCH_CHECK(K % 64 == 0 && values.size(1) * 2 == K, "K must be a multiple of 64 with values [N, K/2]");
    TORCH_CHECK(meta.size(0) == (N + 127) / 128 * 8 && meta.size(1) == K / 64 && meta.size(2) == 32, "meta shape");
    const bool has_bias = bias.numel() > 0;
    TORCH_CHECK(!has_bias || (bias.scalar_type() == at::kFloat && bias.is_contiguous() && bias.numel() == N),
                "bias: fp32 [N]");
    const c10::cuda::CUDAGuard guard(x.device());
    auto y = torch::empty({M, N}, x.options());
    if (M == 0 || N == 0) return y;
    int err = slim_nm24_mma_launch(x.data_ptr(), values.data_ptr(), meta.data_ptr(),
                                   has_bias ? bias.data_ptr<float>() : nullptr, y.data_ptr(), (int)M, (int)N, (int)K,
                                   x.scalar_type() == at::kBFloat16, (int)config,
                                   (void*)at::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == 0, "nm24 sparse-MMA launch failed: ", cudaGetErrorString((cudaError_t)err));
    return y;
}
"""


class Packed24(NamedTuple):
    """A 2:4 weight in the sparse-MMA kernel's layout (see the module docstring)."""

    values: torch.Tensor  # [N, K/2], fp16 or bf16
    meta: torch.Tensor  # int32 [ceil(N/128)*8, K/64, 32]
    out_features: int
    in_features: int


def smem_bytes(config: int) -> int:
    """Shared memory per block of a tile config (the kernel's `smem_bytes`: 80 B per weight row,
    144 B per input row and 8 B of metadata per weight row, per stage)."""
    bn, bm, _, _, stages = CONFIGS[config]
    return stages * (bn * 80 + bm * 144 + bn * 8)


def unsupported(k: int, dtype: torch.dtype) -> str | None:
    """Why the kernel cannot run a layer of K inputs in `dtype` (None: it can)."""
    if k % K_TILE:
        return f"K={k} is not a multiple of {K_TILE}"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"dtype {dtype} (fp16 or bf16 only)"
    return None


def _bad_group(mask: torch.Tensor) -> tuple[int, int]:
    row, group = (int(i) for i in mask.nonzero()[0])
    return row, group


def _nibbles(values: torch.Tensor, positions: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values with each pair in ascending slot order, nibble per group [N, K/4] int64)."""
    n = values.shape[0]
    if values.shape != (n, k // 2) or positions.shape != (n, storage.packed_len(k // 2, 2)):
        raise ValueError(f"2:4 weight of {k} inputs: values must be [N, {k // 2}] and positions [N, "
                         f"{storage.packed_len(k // 2, 2)}]; got {tuple(values.shape)} and {tuple(positions.shape)}")
    pos = storage.unpack(positions, 2, k // 2).long().reshape(n, k // 4, 2)
    same = pos[..., 0] == pos[..., 1]
    if bool(same.any()):
        row, group = _bad_group(same)
        raise ValueError(f"2:4 metadata: row {row}, group {group} (inputs {4 * group}..{4 * group + 3}) stores both "
                         f"values at slot {int(pos[row, group, 0])}; mma.sp needs two distinct slots per group")
    vals = values.reshape(n, k // 4, 2)
    swap = pos[..., 0] > pos[..., 1]
    if bool(swap.any()):  # `to_nm` stores ascending slots; keep any other writer's pairs valid too
        pos = torch.where(swap[..., None], pos.flip(-1), pos)
        vals = torch.where(swap[..., None], vals.flip(-1), vals)
    return vals.reshape(n, k // 2), pos[..., 0] | (pos[..., 1] << 2)


def to_sparse_mma(values: torch.Tensor, positions: torch.Tensor, k: int,
                  dtype: torch.dtype = torch.float16) -> Packed24:
    """The stored 2:4 format (`storage.to_nm`: values [N, K/2], positions uint8 [N, K/8]) in the kernel's
    layout: values in `dtype`, metadata words per lane (module docstring). Plain torch, any device.

    Raises ValueError naming the row and group of a group whose two slots coincide, and for K not
    a multiple of 64."""
    if k % K_TILE:
        raise ValueError(f"sparse-MMA 2:4 layout: K={k} must be a multiple of {K_TILE}")
    n = values.shape[0]
    vals, nib = _nibbles(values, positions, k)
    rows = -(-n // META_ROWS) * META_ROWS
    nib = torch.cat([nib, nib.new_full((rows - n, k // 4), VALID_PAD)]) if rows > n else nib
    # nib[16 rb + 8 hi + g, 16 kb + 8 s + 4 h + j] -> word[rb, kb, 4g + 2s + h], bits 16 hi + 4j
    r = nib.reshape(rows // 16, 2, 8, k // 64, 2, 2, 4)
    shift = (16 * torch.arange(2, device=nib.device)).view(1, 2, 1, 1, 1, 1, 1) + \
        (4 * torch.arange(4, device=nib.device)).view(1, 1, 1, 1, 1, 1, 4)
    words = (r << shift).sum((1, 6))  # disjoint bit fields: sum == or; [rb, g, kb, s, h]
    words = words.permute(0, 2, 1, 3, 4).reshape(rows // 16, k // 64, 32)
    words = torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32)  # the same 32 bits
    return Packed24(vals.to(dtype).contiguous(), words.contiguous(), n, k)


def pack_dense(weight: torch.Tensor, dtype: torch.dtype = torch.float16) -> Packed24:
    """A dense [N, K] 2:4 weight (at most 2 nonzeros in every 4 consecutive inputs) in the kernel's
    layout. Raises ValueError naming the first group with more than 2 nonzeros."""
    n, k = weight.shape
    if k % 4:
        raise ValueError(f"2:4 weight: K={k} is not a multiple of 4")
    over = (weight.reshape(n, k // 4, 4) != 0).sum(-1) > 2
    if bool(over.any()):
        row, group = _bad_group(over)
        raise ValueError(f"not 2:4 sparse: row {row}, group {group} (inputs {4 * group}..{4 * group + 3}) has "
                         f"{int((weight[row, 4 * group:4 * group + 4] != 0).sum())} nonzeros")
    values, positions = storage.to_nm(weight, 2, 4)
    return to_sparse_mma(values, positions, k, dtype)


def decode_emulated(packed: Packed24) -> torch.Tensor:
    """The dense [N, K] weight as the kernel's `mma.sp` instructions read it: for every 16 x 64 block,
    both instructions (selector s = 0, 1), every lane and A register, the register's two values, its
    row and group from the fragment layout, and its nibble from the metadata word of the lane the
    selector names. Raises ValueError on an invalid nibble (undefined behaviour on the hardware)."""
    vals, meta, n, k = packed
    rb_n, kb_n = meta.shape[0], meta.shape[1]
    if meta.shape != (-(-n // META_ROWS) * META_ROWS // 16, k // 64, 32) or vals.shape != (n, k // 2):
        raise ValueError(f"packed 2:4 weight of shape [{n}, {k}]: got values {tuple(vals.shape)}, meta "
                         f"{tuple(meta.shape)}")
    rows = rb_n * 16
    v = torch.zeros(rows, k // 2, dtype=vals.dtype, device=vals.device)
    v[:n] = vals
    v = v.reshape(rb_n, 16, kb_n, 32).transpose(1, 2)  # [rb, kb, row in block, compressed column in block]
    # per (lane, selector s, A register): its row, first compressed column, metadata lane and bit offset
    lane = torch.arange(32).view(32, 1, 1)
    s = torch.arange(2).view(1, 2, 1)
    reg = torch.arange(4).view(1, 1, 4)  # a0 (row g, group t), a1 (row g+8), a2 (row g, group 4+t), a3
    g, t, hi, half = lane >> 2, lane & 3, reg & 1, reg >> 1
    row = (g + 8 * hi).expand(32, 2, 4)
    col = (16 * s + 8 * half + 2 * t).expand(32, 2, 4)  # the register's first value
    src_lane = (4 * g + 2 * s + half).expand(32, 2, 4)  # the lane of the quad that selector s names
    shift = (16 * hi + 4 * t).expand(32, 2, 4)
    base = (32 * s + 16 * half + 4 * t).expand(32, 2, 4)  # first input of the register's group
    dev = vals.device
    row, col, src_lane, shift, base = (i.to(dev) for i in (row, col, src_lane, shift, base))
    words = (meta.long() & 0xFFFFFFFF)[:, :, src_lane]  # [rb, kb, 32, 2, 4]
    nib = (words >> shift) & 0xF
    bad = torch.isin(nib, torch.tensor(INVALID_NIBBLES, device=dev))
    if bool(bad.any()):
        rb, kb, ln, sel, rg = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"invalid 2:4 metadata nibble {int(nib[rb, kb, ln, sel, rg]):#06b} for row "
                         f"{16 * rb + int(row[ln, sel, rg])}, inputs {64 * kb + int(base[ln, sel, rg])}.. "
                         f"(lane {ln}, selector {sel})")
    out = torch.zeros(rb_n, kb_n, 16 * 64, dtype=vals.dtype, device=dev)
    for c, slot in ((0, nib & 3), (1, nib >> 2)):  # the register's two values and their slots
        src = v[:, :, row, col + c]  # [rb, kb, 32, 2, 4]
        pos = row * 64 + base + slot
        out.scatter_(2, pos.reshape(rb_n, kb_n, -1), src.reshape(rb_n, kb_n, -1))
    out = out.reshape(rb_n, kb_n, 16, 64).transpose(1, 2)
    return out.reshape(rows, k)[:n]


_MODULE = None


def source_hash() -> str:
    return hashlib.sha1((KERNEL_SRC + BINDING_SRC).encode()).hexdigest()[:12]


def build(verbose: bool = False):
    """Compile (first call in a process; torch caches the build on disk) and load the CUDA extension
    with load_inline (nvcc and ninja). Refused without a CUDA device: it is built where it runs."""
    global _MODULE
    if _MODULE is None:
        if not torch.cuda.is_available():
            raise RuntimeError("the 2:4 sparse-MMA kernel is built and run on a CUDA device only")
        from torch.utils.cpp_extension import load_inline
        _MODULE = load_inline(name=f"slim_nm24_mma_{source_hash()}", cpp_sources=BINDING_SRC, cuda_sources=KERNEL_SRC,
                              functions=["nm24_mma"], extra_cuda_cflags=["-O3", "-lineinfo"], verbose=verbose)
    return _MODULE


def default_config(m: int) -> int:
    """The tile config for M input rows (a guess until timed: decode-sized M gets narrow tiles)."""
    return 2 if m <= 16 else 1 if m <= 64 else 0


def nm24_sparse_mma_linear(x: torch.Tensor, packed: Packed24, bias: torch.Tensor | None = None,
                           config: int | None = None) -> torch.Tensor:
    """y = x @ W^T + bias for a 2:4 weight W [N, K] packed by `to_sparse_mma` (fp16/bf16, on CUDA)."""
    m, k = x.shape
    if k != packed.in_features:
        raise ValueError(f"x has {k} features; the packed weight takes {packed.in_features}")
    why = unsupported(k, x.dtype)
    if why:
        raise ValueError(f"2:4 sparse-MMA kernel: {why}")
    x = x.contiguous()
    if x.data_ptr() % 16:  # cp.async copies 16-byte pieces
        x = x.clone()
    v = packed.values if packed.values.dtype == x.dtype else packed.values.to(x.dtype)
    b = bias.float().contiguous() if bias is not None else x.new_empty(0, dtype=torch.float32)
    return build().nm24_mma(x, v, packed.meta, b, default_config(m) if config is None else config)


# Shapes (device name, N, K, largest M) at which a GPU run measured this kernel faster than the
# Triton nm24 kernel. Empty: nothing has run on a GPU yet, so `auto` keeps the Triton kernel.
MEASURED_FASTER: dict[str, list[tuple[int, int, int]]] = {}


def prefers_sparse_mma(m: int, n: int, k: int, device: torch.device) -> bool:
    """Whether a layer of shape [N, K] at M rows should run this kernel rather than the Triton one
    (kernel choice `auto`): only where a measurement on this kind of device said so."""
    if device.type != "cuda" or unsupported(k, torch.float16):
        return False
    rows = MEASURED_FASTER.get(torch.cuda.get_device_name(device), [])
    return any(n == rn and k == rk and m <= rm for rn, rk, rm in rows)
