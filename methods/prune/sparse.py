"""Pruned layers stored sparse: `SparseLinear` / `SparseConv2d` (bitmask or CSR) and
`NMLinear` / `NMConv2d` (N:M values + positions).

What is stored is the artifact: the nonzero values and their index data (listed in `slim_index`,
so the size counts them and the parameter count does not). A conv is stored over its
[out, in/groups*kh*kw] view. To run, a layer expands its weight once into a non-persistent dense
buffer (the `dense` kernel, any device), or multiplies with torch's CSR sparse matmul on the
stored values (`csr`, Linear only), or, with `auto`, picks between the two by the number of rows
(CSR up to `csr_rows`, a threshold the method timed per layer on the compress device). N:M layers on CUDA run the Triton kernel that expands the
compressed weight tile by tile (`kernels/nm.py`).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from slimbench.methods.common import storage
from slimbench.methods.common.layers import REFERENCE, ConvGeometry, conv_cost, dtype_bits, fan_in, linear_cost


class StoredSparse(nn.Module):
    """A weight stored compressed and expanded lazily into a cached dense matrix [out, in]."""

    in_features: int
    out_features: int

    def _init_cache(self) -> None:
        self.register_buffer("_dense", None, persistent=False)
        self._conv_weight: torch.Tensor | None = None  # convs: the 4-d weight in the inputs' layout

    def expand(self) -> torch.Tensor:
        raise NotImplementedError

    def weight2d(self) -> torch.Tensor:
        if self._dense is None or self._dense.device != self.values.device:
            self._dense = self.expand()
            self._conv_weight = None
        return self._dense

    def conv_weight(self, x: torch.Tensor) -> torch.Tensor:
        """The expanded conv weight, 4-d, in x's dtype and memory format, cached: a sparse conv run
        with the dense kernel costs what the dense conv costs, not a reshape and copy per call."""
        w = self._conv_weight
        channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        if w is None or w.dtype != x.dtype or w.device != x.device or \
                w.is_contiguous(memory_format=torch.channels_last) != channels_last:
            w = self.weight_4d(self.weight2d().to(x.dtype), x)
            w = w.contiguous(memory_format=torch.channels_last) if channels_last else w.contiguous()
            self._conv_weight = w
        return w

    def values_as(self, dtype: torch.dtype) -> torch.Tensor:
        """The stored values in the kernels' dtype, cast once (not once per call)."""
        v = getattr(self, "_typed_values", None)
        if v is None or v.dtype != dtype or v.device != self.values.device:
            v = self._typed_values = self.values.to(dtype).contiguous()
        return v

    def index32(self, name: str) -> torch.Tensor:
        """A stored index buffer as contiguous int32 for the GPU kernels, converted once (it is stored
        in the narrowest integer type, and converting it per call would cost a copy every forward)."""
        cache = self.__dict__.setdefault("_index32", {})
        t, src = cache.get(name), getattr(self, name)
        if t is None or t.device != src.device:
            t = cache[name] = src.to(torch.int32).contiguous()
        return t

    def _apply(self, fn, recurse=True):
        self.__dict__.pop("_index32", None)
        self._conv_weight = self._typed_values = None  # re-derived from the stored tensors on next use
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):
        self.__dict__.pop("_index32", None)
        self._dense, self._conv_weight, self._typed_values = None, None, None
        super()._load_from_state_dict(*args, **kwargs)

    def slim_weight(self) -> torch.Tensor:
        """The dense weight this layer computes with ([out, fan_in]), for measured sparsity and FLOPs."""
        return self.expand()

    @property
    def density(self) -> float:
        return self.values.numel() / (self.in_features * self.out_features)

    def slim_path(self, device: str, dtype: torch.dtype) -> str:
        """Subclasses with a sparse kernel override this; the default forward multiplies the
        weight expanded to dense (once, cached), so it runs at dense speed."""
        op = "conv" if isinstance(self, ConvGeometry) else "GEMM"
        return f"{REFERENCE}weight expanded to dense, dense {op}"

    def slim_cost(self, inputs, output) -> dict[str, int]:
        bits = (32, dtype_bits(inputs[0]))
        if isinstance(self, ConvGeometry):
            return conv_cost(self, output, self.density, bits)
        return linear_cost(self, inputs, self.density, bits)


class SparseLinear(StoredSparse):
    """Buffers: `values` [nnz] and either `mask` uint8 (bitmask) or `col_idx` + `row_ptr` (CSR); `bias`."""

    def __init__(self, in_features: int, out_features: int, bias: bool, nnz: int, storage_kind: str = "bitmask",
                 kernel: str = "dense", csr_rows: int = 0, timed_on: str = ""):
        super().__init__()
        self.in_features, self.out_features, self.storage, self.kernel = in_features, out_features, storage_kind, kernel
        # kernel=auto: CSR for inputs of at most `csr_rows` rows on `timed_on` devices (set by timing)
        self.csr_rows, self.timed_on = csr_rows, timed_on
        self.register_buffer("values", torch.zeros(nnz))
        if storage_kind == "bitmask":
            self.register_buffer("mask", torch.zeros(-(-in_features * out_features // 8), dtype=torch.uint8))
            self.slim_index = ("mask",)
        else:
            self.register_buffer("col_idx", torch.zeros(nnz, dtype=storage.index_dtype(in_features)))
            self.register_buffer("row_ptr", torch.zeros(out_features + 1, dtype=torch.int32))
            self.slim_index = ("col_idx", "row_ptr")
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._init_cache()
        self.register_buffer("_csr", None, persistent=False)

    @classmethod
    def from_dense(cls, weight2d: torch.Tensor, bias: torch.Tensor | None, storage_kind: str,
                   kernel: str, keep: torch.Tensor | None = None) -> "SparseLinear":
        w = weight2d.detach().float()
        kept = int(keep.sum()) if keep is not None else int(torch.count_nonzero(w))
        layer = cls(w.shape[1], w.shape[0], bias is not None, kept, storage_kind, kernel)
        return layer.fill(w, bias, keep)

    def fill(self, w: torch.Tensor, bias: torch.Tensor | None, keep: torch.Tensor | None = None) -> "SparseLinear":
        """Store the kept positions (`keep`, default the nonzeros) of a [out, in] weight in this layer's format."""
        w = w.detach().float()
        if keep is not None:
            keep = keep.reshape(w.shape)
        if self.storage == "bitmask":
            values, mask = storage.to_bitmask(w, keep)
            self.mask.copy_(mask)
        else:
            values, col, ptr = storage.to_csr(w, keep)
            self.col_idx.copy_(col)
            self.row_ptr.copy_(ptr)
        self.values.copy_(values)
        if bias is not None:
            self.bias = bias.detach().clone().float()
        return self.to(w.device)

    def expand(self) -> torch.Tensor:
        if self.storage == "bitmask":
            return storage.from_bitmask(self.values, self.mask, (self.out_features, self.in_features))
        return storage.from_csr(self.values, self.col_idx, self.row_ptr, self.in_features)

    def _csr_weight(self) -> torch.Tensor:
        if self._csr is None or self._csr.device != self.values.device:
            if self.storage == "csr":
                self._csr = torch.sparse_csr_tensor(self.row_ptr.long(), self.col_idx.long(), self.values,
                                                    (self.out_features, self.in_features), check_invariants=False)
            else:
                with warnings.catch_warnings():  # torch flags CSR as beta on every conversion
                    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                    self._csr = self.expand().to_sparse_csr()
        return self._csr

    def _load_from_state_dict(self, *args, **kwargs):
        self._csr = None
        super()._load_from_state_dict(*args, **kwargs)

    def uses_csr(self, x: torch.Tensor) -> bool:
        """Whether `x` runs through the CSR kernel: always with kernel=csr; with auto, when the rows
        are within the threshold timed on this device type."""
        if self.kernel == "auto":
            return x.device.type == self.timed_on and x.numel() // self.in_features <= self.csr_rows
        return self.kernel == "csr"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uses_csr(x):
            x2 = x.reshape(-1, self.in_features)
            y = torch.sparse.mm(self._csr_weight().to(x.dtype), x2.t()).t()
            y = y if self.bias is None else y + self.bias.to(x.dtype)
            return y.reshape(*x.shape[:-1], self.out_features)
        w = self.weight2d().to(x.dtype)
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def slim_path(self, device: str, dtype: torch.dtype) -> str:
        if isinstance(self, ConvGeometry):
            return super().slim_path(device, dtype)
        if self.kernel == "csr":
            return "sparse CSR GEMM: torch.sparse.mm"
        if self.kernel == "auto" and device.split(":")[0] == self.timed_on:
            dense = "dense GEMM on the weight expanded at load"
            if self.csr_rows <= 0:
                return f"{dense} (timed faster than torch.sparse.mm at every measured batch size)"
            return f"torch.sparse.mm (CSR) up to {self.csr_rows} rows, above that {dense} (chosen by timing)"
        return super().slim_path(device, dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.values.numel()}, "
                f"storage={self.storage}, kernel={self.kernel}")


class BlockSparseLinear(StoredSparse):
    """A Linear pruned in BxB blocks, stored as torch's BSR: `values` [nnzb, B, B], `crow_indices`
    [out/B + 1], `col_indices` [nnzb] (the index data); `bias`. On CUDA in half precision the
    block-sparse kernel multiplies the stored blocks only; elsewhere the weight is expanded once."""

    slim_index = ("crow_indices", "col_indices")

    def __init__(self, in_features: int, out_features: int, bias: bool, blocks: int, block: int):
        super().__init__()
        self.in_features, self.out_features, self.block = in_features, out_features, block
        self.register_buffer("values", torch.zeros(blocks, block, block))
        self.register_buffer("crow_indices", torch.zeros(out_features // block + 1, dtype=torch.int32))
        self.register_buffer("col_indices", torch.zeros(blocks, dtype=storage.index_dtype(in_features // block)))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._init_cache()

    @classmethod
    def from_linear(cls, lin: nn.Linear, block: int) -> "BlockSparseLinear":
        bsr = lin.weight.detach().float().to_sparse_bsr((block, block))
        layer = cls(lin.in_features, lin.out_features, lin.bias is not None, bsr.values().shape[0], block)
        layer.values.copy_(bsr.values())
        layer.crow_indices.copy_(bsr.crow_indices())
        layer.col_indices.copy_(bsr.col_indices())
        if lin.bias is not None:
            layer.bias = lin.bias.detach().clone().float()
        return layer.to(lin.weight.device)

    def expand(self) -> torch.Tensor:
        return torch.sparse_bsr_tensor(self.crow_indices.long(), self.col_indices.long(), self.values,
                                       (self.out_features, self.in_features)).to_dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
            from slimbench.methods.prune.kernels import blocksparse as kern
            y = kern.bsr_linear(x.reshape(-1, self.in_features), self.values_as(x.dtype), self.index32("crow_indices"),
                                self.index32("col_indices"), self.bias)
            return y.reshape(*x.shape[:-1], self.out_features)
        return F.linear(x, self.weight2d().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def slim_path(self, device: str, dtype: torch.dtype) -> str:
        if device.startswith("cuda") and dtype in (torch.float16, torch.bfloat16):
            return "Triton block-sparse GEMM on the stored blocks"
        return super().slim_path(device, dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, block={self.block}, "
                f"blocks={self.values.shape[0]}")


class SparseConv2d(ConvGeometry, SparseLinear):
    """A Conv2d stored like a SparseLinear over its [out, in/groups*kh*kw] view; runs dense."""

    def __init__(self, conv: nn.Conv2d, nnz: int, storage_kind: str = "bitmask"):
        super().__init__(fan_in(conv), conv.out_channels, conv.bias is not None, nnz, storage_kind, "dense")
        self.init_geometry(conv)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, storage_kind: str, keep: torch.Tensor | None = None) -> "SparseConv2d":
        w2 = conv.weight.detach().reshape(conv.out_channels, -1)
        kept = int(keep.sum()) if keep is not None else int(torch.count_nonzero(w2))
        return cls(conv, kept, storage_kind).fill(w2, conv.bias, keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.conv_weight(x), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.conv_repr()}, nnz={self.values.numel()}, storage={self.storage}"


class NMLinear(StoredSparse):
    """Exactly n of every m consecutive inputs kept: `values` [out, in*n/m] and `positions`
    (each value's index in its group, bit-packed) as the index data; `bias`.

    2:4 on CUDA in fp16/bf16 runs a GPU kernel chosen by `nm_kernel`: "triton" (the default: the
    weight expanded in registers, `kernels/nm.py`), "sparse_mma" (the sparse tensor cores,
    `kernels/nm_sparse_mma.py`, K a multiple of 64; its metadata is derived from the stored tensors
    once and cached, the storage is unchanged) or "auto" (sparse MMA only at the shapes a GPU run
    measured faster, `nm_sparse_mma.MEASURED_FASTER`; none yet). A run-time choice: not saved."""

    slim_index = ("positions",)
    nm_kernel = "triton"

    def __init__(self, in_features: int, out_features: int, bias: bool, n: int, m: int):
        super().__init__()
        self.in_features, self.out_features, self.n, self.m = in_features, out_features, n, m
        kept = in_features // m * n
        self.register_buffer("values", torch.zeros(out_features, kept))
        self.register_buffer("positions", torch.zeros(out_features, storage.packed_len(kept, storage.nm_index_bits(m)),
                                                      dtype=torch.uint8))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._init_cache()

    def fill(self, weight2d: torch.Tensor, bias: torch.Tensor | None) -> "NMLinear":
        values, positions = storage.to_nm(weight2d.detach().float(), self.n, self.m)
        self.values.copy_(values)
        self.positions.copy_(positions)
        if bias is not None:
            self.bias = bias.detach().clone().float()
        return self.to(weight2d.device)

    def expand(self) -> torch.Tensor:
        return storage.from_nm(self.values, self.positions, self.n, self.m, self.in_features)

    def _apply(self, fn, recurse=True):
        self.__dict__.pop("_mma24", None)
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):
        self.__dict__.pop("_mma24", None)
        super()._load_from_state_dict(*args, **kwargs)

    def runs_sparse_mma(self, rows: int, device: torch.device) -> bool:
        """Whether a CUDA 2:4 call of `rows` inputs takes the sparse-MMA kernel (`nm_kernel`)."""
        if self.nm_kernel not in ("triton", "sparse_mma", "auto"):
            raise ValueError(f"nm_kernel={self.nm_kernel!r}; valid: 'triton', 'sparse_mma', 'auto'")
        if self.nm_kernel == "triton" or self.in_features % 64:  # the sparse-MMA kernel's K tile
            return False
        from slimbench.methods.prune.kernels import nm_sparse_mma as mma
        return self.nm_kernel == "sparse_mma" or mma.prefers_sparse_mma(rows, self.out_features, self.in_features,
                                                                        device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and self.n == 2 and self.m == 4 and x.dtype in (torch.float16, torch.bfloat16) \
                and self.in_features % 16 == 0:  # the kernel's K tile; other widths run the dense path
            x2 = x.reshape(-1, self.in_features)
            if self.runs_sparse_mma(x2.shape[0], x.device):
                from slimbench.methods.prune.kernels import nm_sparse_mma as mma
                cache = self.__dict__.setdefault("_mma24", {})  # per dtype, dropped on .to() and reload
                if x.dtype not in cache:
                    cache[x.dtype] = mma.to_sparse_mma(self.values, self.positions, self.in_features, x.dtype)
                y = mma.nm24_sparse_mma_linear(x2, cache[x.dtype], self.bias)
            else:
                from slimbench.methods.prune.kernels import nm as kern
                y = kern.nm24_linear(x2, self.values_as(x.dtype), self.positions, self.bias)
            return y.reshape(*x.shape[:-1], self.out_features)
        return F.linear(x, self.weight2d().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def slim_path(self, device: str, dtype: torch.dtype) -> str:
        if device.startswith("cuda") and self.n == 2 and self.m == 4 and dtype in (torch.float16, torch.bfloat16) \
                and self.in_features % 16 == 0 and not isinstance(self, ConvGeometry):
            if self.nm_kernel == "sparse_mma" and self.in_features % 64 == 0:
                return "CUDA 2:4 sparse-MMA GEMM (mma.sp, sparse tensor cores)"
            return "Triton 2:4 GEMM (expanded in registers, dense tensor cores)"
        return super().slim_path(device, dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, pattern={self.n}:{self.m}"


class NMConv2d(ConvGeometry, NMLinear):
    """A Conv2d stored like an NMLinear over its [out, in/groups*kh*kw] view; runs dense."""

    def __init__(self, conv: nn.Conv2d, n: int, m: int):
        super().__init__(fan_in(conv), conv.out_channels, conv.bias is not None, n, m)
        self.init_geometry(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.conv_weight(x), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.conv_repr()}, pattern={self.n}:{self.m}"


def sparse_twin(layer: nn.Module, storage_kind: str, kernel: str, block: int = 1,
                keep: torch.Tensor | None = None) -> StoredSparse:
    """The sparse-stored twin of a (masked) Linear / Conv2d, storing exactly the `keep` positions
    (the pruning mask; default: the nonzeros)."""
    if storage_kind == "bsr":
        return BlockSparseLinear.from_linear(layer, block)
    if isinstance(layer, nn.Conv2d):
        return SparseConv2d.from_conv(layer, storage_kind, keep)
    return SparseLinear.from_dense(layer.weight, layer.bias, storage_kind, kernel, keep)


def empty_sparse(layer: nn.Module, nnz: int, storage_kind: str, kernel: str, block: int = 1,
                 csr_rows: int = 0, timed_on: str = "") -> StoredSparse:
    """An empty sparse twin for a freshly built layer (restore; filled by load_state_dict); `nnz`
    counts stored values (whole blocks for bsr); `csr_rows`/`timed_on`: kernel=auto's timed choice."""
    if storage_kind == "bsr":
        return BlockSparseLinear(layer.in_features, layer.out_features, layer.bias is not None, nnz // block ** 2, block)
    if isinstance(layer, nn.Conv2d):
        return SparseConv2d(layer, nnz, storage_kind)
    return SparseLinear(layer.in_features, layer.out_features, layer.bias is not None, nnz, storage_kind, kernel,
                        csr_rows, timed_on)


def nm_twin(layer: nn.Module, n: int, m: int, fill: bool = True) -> NMLinear:
    """The N:M twin of a Linear / Conv2d, filled from its (N:M-masked) weight or empty."""
    if isinstance(layer, nn.Conv2d):
        twin = NMConv2d(layer, n, m)
    else:
        twin = NMLinear(layer.in_features, layer.out_features, layer.bias is not None, n, m)
    if not fill:
        return twin
    return twin.fill(layer.weight.reshape(layer.weight.shape[0], -1), layer.bias)


def densify(model: nn.Module) -> nn.Module:
    """Every stored-sparse layer back as the plain nn.Linear / nn.Conv2d it was, its pruned weights
    zero: the same function, for a pipeline stage that follows pruning (which keeps the zeros only
    if it does not train them back)."""
    from slimbench.methods.common.layers import replace_module

    for name, layer in list(model.named_modules()):
        if not isinstance(layer, StoredSparse):
            continue
        w2 = layer.expand().detach()
        has_bias = getattr(layer, "bias", None) is not None
        if isinstance(layer, ConvGeometry):
            plain = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                              layer.dilation, layer.groups, has_bias, layer.padding_mode)
            plain.weight.data.copy_(layer.weight_4d(w2, w2))
        else:
            plain = nn.Linear(layer.in_features, layer.out_features, has_bias)
            plain.weight.data.copy_(w2)
        if has_bias:
            plain.bias.data.copy_(layer.bias.detach())
        replace_module(model, name, plain.to(w2.device))
    return model
