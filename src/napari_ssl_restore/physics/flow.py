"""Optical flow, warping and occlusion masks on the device, batched over frame pairs.

TV-L1 optical flow (Zach, Pock & Bischof, DAGM 2007; the improved scheme of Wedel et al. 2009 as
detailed by Sánchez Pérez, Meinhardt-Llopis & Facciolo, IPOL 2013) written in torch, so that
Frame2Frame computes its flows on the GPU beside the network instead of spending most of its time
in a CPU solver. For the flow ``u`` between a reference ``I0`` and a moving image ``I1`` it
minimises ``∫ |∇u_r| + |∇u_c| + λ |I1(x + u) − I0(x)|`` coarse to fine: at every pyramid level
``I1`` is warped by the current flow and linearised (``warps`` times), and the linearised problem is
solved by alternating a pointwise thresholding step (the data term, coupled to ``u`` with weight
``1/(2θ)``) and Chambolle's dual projection for the total variation of each component
(``iterations`` times, two projection steps each).

The defaults (λ = 15, θ = 0.3, 5 warps, 10 iterations, pyramid by factors of 2 down to 16 px) are
those of scikit-image's ``optical_flow_tvl1``, the CPU reference it is validated against (tests and
``benchmarks/bench_flow.py``). Differences: the pyramid is an antialiased bilinear
reduction, the flow is carried to the next level by bilinear interpolation, and every warp runs (no
tolerance test, which would need a read-back from the device).

All functions take and return torch tensors on one device: images ``(N, H, W)`` (or
``(N, C, H, W)`` where noted), flows ``(N, 2, H, W)`` as (rows, columns) with
``moving[r + u_r, c + u_c] ≈ reference[r, c]``.
"""
from __future__ import annotations

import math


def _grid(flow):
    """Sampling grid for ``grid_sample`` (``align_corners=True``) at ``x + flow``."""
    import torch

    h, w = flow.shape[-2:]
    rows = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    cols = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    r = rows + flow[:, 0]
    c = cols + flow[:, 1]
    return torch.stack([2 * c / max(w - 1, 1) - 1, 2 * r / max(h - 1, 1) - 1], dim=-1), r, c


def warp(image, flow, mode: str = "bilinear"):
    """Backward-warp ``(N, C, H, W)`` ``image`` by ``flow`` (edge values outside).

    ``mode``: ``"bilinear"`` (flows, masks) or ``"bicubic"`` (images whose detail matters: at a
    half-pixel shift bilinear interpolation is a two-tap average that blurs texture, which a network
    trained on the warped frame, or a fusion of warped frames, then learns or keeps). Returns the
    warped image and a boolean ``(N, H, W)`` map of the pixels that sampled inside the frame.
    """
    import torch.nn.functional as F

    grid, r, c = _grid(flow.to(image.dtype))
    h, w = image.shape[-2:]
    inside = (r >= 0) & (r <= h - 1) & (c >= 0) & (c <= w - 1)
    warped = F.grid_sample(image, grid, mode=mode, padding_mode="border", align_corners=True)
    return warped, inside


def _forward_diff(u):
    """Forward differences of ``(..., H, W)`` along rows and columns (zero at the far border),
    stacked on a new axis -3: ``(..., 2, H, W)``."""
    import torch
    import torch.nn.functional as F

    dr = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    dc = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1))
    return torch.stack([dr, dc], -3)


def _divergence(p):
    """The negative adjoint of :func:`_forward_diff`: ``(..., 2, H, W)`` -> ``(..., H, W)``."""
    import torch.nn.functional as F

    pr, pc = p[..., 0, :, :], p[..., 1, :, :]
    # backward differences with p = 0 outside and on the last row/column
    pr = pr.clone()
    pr[..., -1, :] = 0
    pc = pc.clone()
    pc[..., :, -1] = 0
    dr = pr - F.pad(pr[..., :-1, :], (0, 0, 1, 0))
    dc = pc - F.pad(pc[..., :, :-1], (1, 0))
    return dr + dc


def _reduce(x):
    """Half-size antialiased reduction of ``(N, H, W)``."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    size = (max(1, math.ceil(h / 2)), max(1, math.ceil(w / 2)))
    return F.interpolate(x[:, None], size=size, mode="bilinear", antialias=True,
                         align_corners=False)[:, 0]


def _resize_flow(flow, size):
    """Bilinear resize of a flow to ``size``, its vectors scaled with it."""
    import torch.nn.functional as F

    h, w = flow.shape[-2:]
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    out[:, 0] *= size[0] / h
    out[:, 1] *= size[1] / w
    return out


def _solve_level(i0, i1, flow, *, attachment, tightness, warps, iterations):
    """TV-L1 at one pyramid level, starting from ``flow``."""
    import torch

    tau = 0.25  # dual step: τ ≤ 1/4 keeps the 2-D projection stable (τ = 1/(2·ndim))
    lt = attachment * tightness
    dual = torch.zeros(flow.shape[:2] + (2,) + flow.shape[2:], device=flow.device,
                       dtype=flow.dtype)  # (N, 2 components, 2 directions, H, W)
    for _ in range(warps):
        warped, _ = warp(i1[:, None], flow)
        warped = warped[:, 0]
        grad = torch.stack(torch.gradient(warped, dim=(-2, -1)), 1)  # central, one-sided at edges
        norm2 = (grad * grad).sum(1)
        norm2 = torch.where(norm2 == 0, torch.ones_like(norm2), norm2)
        rho0 = warped - i0 - (grad * flow).sum(1)
        for _ in range(iterations):
            # data term: the pointwise minimiser of λ|ρ(v)| + |v - u|²/(2θ)
            rho = rho0 + (grad * flow).sum(1)
            small = rho.abs() <= lt * norm2
            step = torch.where(small, rho / norm2, lt * torch.sign(rho))
            v = flow - step[:, None] * grad
            # total variation of each component: Chambolle's projection, two steps
            u = v
            for _ in range(2):
                g = _forward_diff(u)
                mag = torch.sqrt((g * g).sum(2, keepdim=True))
                dual = (dual + (tau / tightness) * g) / (1 + (tau / tightness) * mag)
                u = v + tightness * _divergence(dual)
            flow = u
    return flow


def tvl1(reference, moving, *, attachment: float = 15.0, tightness: float = 0.3, warps: int = 5,
         iterations: int = 10, min_size: int = 16, levels: int = 10):
    """TV-L1 flow ``(N, 2, H, W)`` between ``(N, H, W)`` ``reference`` and ``moving`` images.

    ``moving[r + u_r, c + u_c] ≈ reference[r, c]``. Every pair of the batch is solved at once; the
    images should be on a common scale (e.g. [0, 1]).
    """
    import torch

    if reference.shape != moving.shape or reference.dim() != 3:
        raise ValueError(f"tvl1 needs two (N, H, W) batches of one shape; got "
                         f"{tuple(reference.shape)} and {tuple(moving.shape)}.")
    with torch.no_grad():
        pyramid = [(reference.float(), moving.float())]
        while len(pyramid) < levels and min(pyramid[-1][0].shape[-2:]) > 2 * min_size:
            a, b = pyramid[-1]
            pyramid.append((_reduce(a), _reduce(b)))
        pyramid.reverse()
        n, h, w = pyramid[0][0].shape
        flow = torch.zeros((n, 2, h, w), device=reference.device, dtype=torch.float32)
        for k, (a, b) in enumerate(pyramid):
            if k:
                flow = _resize_flow(flow, a.shape[-2:])
            flow = _solve_level(a, b, flow, attachment=attachment, tightness=tightness,
                                warps=warps, iterations=iterations)
    return flow


def tvl1_pairs(reference, moving):
    """:func:`tvl1` for ``(N, H, W)`` pairs the way each device runs them fastest: all at once on a
    GPU, one by one on a CPU (batching was measured slower per pair there,
    ``benchmarks/bench_flow.py``)."""
    import torch

    if reference.device.type == "cuda":
        return tvl1(reference, moving)
    return torch.cat([tvl1(r[None], m[None]) for r, m in zip(reference, moving, strict=False)])


def occlusion_mask(flow, warped_denoised, denoised, inside, *, divergence: float,
                   warp_error: float, dilation: int):
    """Pixels to train on (float ``(N, 1, H, W)``, 1 = trusted): not occluded and inside the frame.

    Occluded: flow divergence magnitude above ``divergence`` (Ehret et al. use ~0.75) or a warping
    error of the ``(N, C, H, W)`` denoised frames above ``warp_error`` (normalised intensity); the
    untrusted region is grown by ``dilation`` pixels (a square neighbourhood).
    """
    import torch
    import torch.nn.functional as F

    div = torch.gradient(flow[:, 0], dim=-2)[0] + torch.gradient(flow[:, 1], dim=-1)[0]
    err = (warped_denoised - denoised).abs().mean(1)
    bad = ((div.abs() > divergence) | (err > warp_error) | ~inside).float()[:, None]
    if dilation > 0:
        bad = F.max_pool2d(bad, 2 * dilation + 1, stride=1, padding=dilation)
    return 1 - bad
