"""The factorisations: weighted truncated SVD of a matrix, Tucker-2 (HOSVD) of a conv kernel, and
the rank rules (energy, parameter / FLOP budget, VBMF).

Written on `torch.linalg.svd` rather than TensorLy: Tucker-2 of a 4-D kernel is two SVDs of its
unfoldings and one contraction (HOSVD), and the suite needs the singular values themselves for
its rank rules; a dependency for ten lines did not pay. VBMF's noise-variance search uses
scipy's bounded scalar minimiser.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class WeightedSVD:
    """W ~ U diag(s) Vt of a weighted matrix, with the weights to undo: rows scaled by `row`,
    columns by `col` before the SVD (`None`: unweighted)."""

    u: torch.Tensor
    s: torch.Tensor
    vt: torch.Tensor
    row: torch.Tensor | None = None
    col: torch.Tensor | None = None

    @property
    def full_rank(self) -> int:
        return int(self.s.numel())

    def factors(self, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(A [out, r], B [r, in]) with W ~ A @ B, the singular values split evenly between them."""
        root = self.s[:rank].sqrt()
        a = self.u[:, :rank] * root
        b = root[:, None] * self.vt[:rank]
        if self.row is not None:
            a = a / self.row[:, None]
        if self.col is not None:
            b = b / self.col[None, :]
        return a.contiguous(), b.contiguous()

    def approx(self, rank: int) -> torch.Tensor:
        a, b = self.factors(rank)
        return a @ b


def weighted_svd(w: torch.Tensor, row: torch.Tensor | None = None, col: torch.Tensor | None = None) -> WeightedSVD:
    """SVD of diag(row) W diag(col) in float64 (weights are strictly positive: callers clamp them)."""
    m = w.detach().double()
    if row is not None:
        row = row.double()
        m = m * row[:, None]
    if col is not None:
        col = col.double()
        m = m * col[None, :]
    u, s, vt = torch.linalg.svd(m, full_matrices=False)
    return WeightedSVD(u, s, vt, row, col)


def positive(v: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    """A weight vector made strictly positive: entries below `floor` x its mean are raised to it
    (a dead input or a row without gradient would otherwise divide by zero on the way back)."""
    v = v.double()
    return v.clamp_min(floor * float(v.mean().clamp_min(1e-30)))


def energy_rank(s: torch.Tensor, energy: float) -> int:
    """Smallest r whose leading singular values hold `energy` of sum(s^2)."""
    e = s.double().pow(2)
    cum = e.cumsum(0) / e.sum().clamp_min(1e-300)
    return int(min(int((cum < energy - 1e-12).sum()) + 1, s.numel()))


def params_rank(out_f: int, in_f: int, fraction: float) -> int:
    """Largest r with r * (in + out) <= fraction * in * out (at least 1)."""
    return max(1, int(fraction * in_f * out_f // (in_f + out_f)))


# ------------------------------------------------------------------ Tucker-2

def unfold(w: torch.Tensor, mode: int) -> torch.Tensor:
    """Mode-`mode` unfolding of a 4-D kernel [O, I, kh, kw]: that mode's index along the rows."""
    return w.movedim(mode, 0).reshape(w.shape[mode], -1)


def mode_spectra(w: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """((U_out, s_out), (U_in, s_in)): left singular vectors and values of the output- and
    input-channel unfoldings."""
    out = []
    for mode in (0, 1):
        u, s, _ = torch.linalg.svd(unfold(w.detach().double(), mode), full_matrices=False)
        out.append((u, s))
    return out[0], out[1]


def tucker2(w: torch.Tensor, r_out: int, r_in: int, spectra=None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HOSVD Tucker-2 of a conv kernel W [O, I, kh, kw] ~ core x_0 U_out x_1 U_in.

    Returns (first [r_in, I, 1, 1], core [r_out, r_in, kh, kw], last [O, r_out, 1, 1]): the three
    convs' weights, in the kernel's dtype."""
    (u_o, _), (u_i, _) = spectra or mode_spectra(w)
    u_o, u_i = u_o[:, :r_out], u_i[:, :r_in]
    wd = w.detach().double()
    core = torch.einsum("oikl,or,is->rskl", wd, u_o, u_i)
    first = u_i.t()[:, :, None, None]
    last = u_o[:, :, None, None]
    return first.to(w.dtype).contiguous(), core.to(w.dtype).contiguous(), last.to(w.dtype).contiguous()


def tucker_flops(out_c: int, in_c: int, k: int, r_out: int, r_in: int, spatial_ratio: float) -> float:
    """MACs per output pixel of the three convs (`spatial_ratio`: input pixels per output pixel,
    where the first 1x1 conv runs)."""
    return r_in * in_c * spatial_ratio + r_out * r_in * k + out_c * r_out


def flops_ranks(out_c: int, in_c: int, k: int, fraction: float, spatial_ratio: float) -> tuple[int, int]:
    """Ranks (r_out, r_in) = rho x (O, I), rho the largest whose three convs cost at most
    `fraction` of the original's O * I * k MACs per output pixel (at least 1 each)."""
    a = out_c * in_c * k  # rho^2 term
    b = in_c * in_c * spatial_ratio + out_c * out_c  # rho term
    c = fraction * out_c * in_c * k
    rho = (-b + math.sqrt(b * b + 4 * a * c)) / (2 * a)
    r_out, r_in = max(1, int(rho * out_c)), max(1, int(rho * in_c))
    return min(r_out, out_c, in_c * k), min(r_in, in_c, out_c * k)  # an unfolding has no more singular vectors


# ------------------------------------------------------------------ VBMF

def _tau(x, alpha):
    import numpy as np
    return 0.5 * (x - (1 + alpha) + np.sqrt(np.maximum((x - (1 + alpha)) ** 2 - 4 * alpha, 0)))


def vbmf_rank(matrix: torch.Tensor) -> int:
    """The rank empirical variational Bayes matrix factorisation keeps (Nakajima, Sugiyama, Babacan &
    Tomioka 2013, global analytic solution), the noise variance estimated by minimising the free
    energy over its analytic bounds. At least 1."""
    import numpy as np
    from scipy.optimize import minimize_scalar

    y = matrix.detach().double().cpu()
    if y.shape[0] > y.shape[1]:
        y = y.t()
    rows, cols = y.shape  # rows <= cols
    s = torch.linalg.svdvals(y).numpy()
    alpha = rows / cols
    tau_bar = 2.5129 * math.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    h_cap = min(int(math.ceil(rows / (1 + alpha))) - 1, len(s)) - 1
    if h_cap < 0 or h_cap + 1 >= len(s):
        return max(1, len(s))
    lower = max(s[h_cap + 1] ** 2 / (cols * x_bar), float(np.mean(s[h_cap + 1:] ** 2)) / cols)
    upper = float(np.sum(s ** 2)) / (rows * cols)

    def free_energy(sigma2: float) -> float:
        x = s ** 2 / (cols * sigma2)
        big, small = x[x > x_bar], x[x <= x_bar]
        t = _tau(big, alpha)
        return float(np.sum(small - np.log(small)) + np.sum(big - t) + np.sum(np.log((t + 1) / big))
                     + alpha * np.sum(np.log(t / alpha + 1)) + (rows - len(s)) * math.log(sigma2))

    if not lower < upper:
        sigma2 = upper
    else:
        sigma2 = float(minimize_scalar(free_energy, bounds=(lower, upper), method="bounded").x)
    threshold = math.sqrt(cols * sigma2 * (1 + tau_bar) * (1 + alpha / tau_bar))
    return max(1, int(np.sum(s > threshold)))
