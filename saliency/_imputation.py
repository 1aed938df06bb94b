"""Noisy linear imputation's linear system (Rong et al. 2022), solved for a batch of images at
once by Jacobi-preconditioned conjugate gradients in float64.

The 3 x 3 neighbour sum is written as two [1 2 1] passes minus the centre: float64 `conv2d`
on CPU is about 3.5x slower than these five additions, and it is most of each iteration. A
multigrid V-cycle preconditioner (bilinear transfers, Galerkin coarse operators) was tried: it
cut the iterations of a 50-percentage ROAD run on MNIST from about 70 to 13 for the largest
holes, but one cycle costs about ten neighbour sums at 28 x 28, so it was slower overall.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Noisy linear imputation's neighbour weights (Rong et al. 2022): 1/6 for the four direct
# neighbours, 1/12 for the diagonal ones. In float64 (the float32 weights an earlier version
# used were off by up to 3e-8 relative).
_WEIGHTS = torch.tensor(
    [[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]], dtype=torch.float64
)


def _neighbours(v: torch.Tensor) -> torch.Tensor:
    """The `_WEIGHTS` sum of each pixel's neighbours `(B, 1, H, W)`, zeros outside: the 3 x 3
    convolution written as two [1 2 1] passes minus the centre (float64 convolution is slow)."""
    p = F.pad(v, (1, 1, 1, 1))
    a = p[..., :-2, :] + p[..., 2:, :]
    a.add_(p[..., 1:-1, :], alpha=2)
    b = a[..., :-2] + a[..., 2:]
    b.add_(a[..., 1:-1], alpha=2)
    return b.sub_(v, alpha=4).mul_(1 / 12)


def linear_imputation(
    x: torch.Tensor, removed: torch.Tensor, *, tol: float = 1e-10, max_iter: int | None = None
) -> torch.Tensor:
    """`x` `(B, C, H, W)` with its `removed` pixels `(B, H, W)` bool replaced by the solution
    of Rong et al.'s (2022) linear system: each removed pixel equals the weighted mean of its
    eight neighbours (weights `_WEIGHTS`, normalised over the neighbours inside the image),
    removed neighbours being unknowns too. Solved for the whole batch at once by Jacobi-
    preconditioned conjugate gradients in float64 (the system is symmetric positive definite
    while any pixel is kept), to a relative residual of `tol`. Same shape and dtype as `x`.
    """
    b_, c_, h, w = x.shape
    if removed.shape != (b_, h, w):
        raise ValueError(f"removed must be (B, H, W) = {(b_, h, w)}, got {tuple(removed.shape)}")
    if bool(removed.flatten(1).all(1).any()):
        raise ValueError("every pixel of an image is removed: nothing to impute from")
    xd = x.double().reshape(b_ * c_, 1, h, w)  # channels share the system: one batch row each
    m = removed.repeat_interleave(c_, 0).unsqueeze(1).double()  # (BC, 1, H, W): 1 = unknown
    total = _neighbours(torch.ones(1, 1, h, w, dtype=torch.float64, device=x.device))
    rhs = m * _neighbours((1 - m) * xd)
    v = torch.zeros_like(rhs)
    dims = (1, 2, 3)
    goal = tol * rhs.square().sum(dims).sqrt()  # (BC,)
    # The systems converge at very different speeds (1 % removed: a few iterations; a large
    # hole: tens): every few iterations the converged ones leave the working set.
    live = torch.arange(len(rhs), device=x.device)
    ml, inv = m, m / total  # the Jacobi preconditioner, zero on the kept pixels
    vl, r = torch.zeros_like(rhs), rhs.clone()
    p = r * inv
    rz = (r * p).sum(dims, keepdim=True)
    for it in range(max_iter or 4 * h * w):
        ap = (total * p).sub_(_neighbours(p)).mul_(ml)  # A p on the unknowns; p is 0 elsewhere
        alpha = rz / (p * ap).sum(dims, keepdim=True).clamp_min(1e-300)
        vl.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1)
        if it % 4 == 3:
            done = r.square().sum(dims).sqrt() <= goal[live]
            if bool(done.any()):
                v[live[done]] = vl[done]
                keep = ~done
                live, ml, inv, vl, r, p, rz = (t[keep] for t in (live, ml, inv, vl, r, p, rz))
                if not len(live):
                    break
        z = r * inv
        rz_new = (r * z).sum(dims, keepdim=True)
        p = z.addcmul_(rz_new / rz.clamp_min(1e-300), p)
        rz = rz_new
    v[live] = vl  # any left at max_iter
    out = torch.where(m > 0, v, xd)
    return out.reshape(b_, c_, h, w).to(x.dtype)
