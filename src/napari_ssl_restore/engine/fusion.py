"""Motion-compensated temporal fusion of restored frames, for the video methods and ``dncnn``.

Each restored frame is averaged with its restored neighbours warped onto it by the device's TV-L1
flow (:mod:`napari_ssl_restore.physics.flow`), where the flow explains them (occlusion masks) and
weighted by how well they match, so that noise left frame by frame averages out over time.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from .planes import Planes

logger = logging.getLogger(__name__)


FUSE_BYTES = 512 * 2**20
"""Memory the restored frames held for temporal fusion may take; a movie of many Z planes fuses
over fewer neighbours (the radius shrinks to fit, with a log line; provenance records the radius
used)."""


class Fusion:
    """Motion-compensated temporal fusion of restored frames.

    Restored frames arrive in ``T``-major order (:meth:`push`); frame ``t`` is written once the
    frames up to ``t + radius`` at its depth have arrived, as the weighted mean of itself and its
    restored neighbours ``t ± 1 .. radius``, each warped onto it (bicubic, which keeps texture
    that a bilinear warp blurs: with the pretrained model's frames −0.01 to +0.26 dB on the
    benchmark's σ = 25 videos, within ±0.04 dB with photon noise) by the TV-L1 flow between the
    restored frames (:func:`napari_ssl_restore.physics.flow.tvl1`, on the run's device). A
    neighbour's weight at a pixel is 0 where the flow is untrusted — large divergence
    (occlusion), warping error above 0.1, sampled outside the frame (Frame2Frame's thresholds,
    :func:`~napari_ssl_restore.physics.flow.occlusion_mask`) — and otherwise ``exp(-d / σ²)``, with
    ``d`` the mean squared difference of the warped neighbour from the frame over 5×5 pixels and
    ``σ²`` the variance of the noise the method removed from that frame (input − restored):
    aligned neighbours differ by much less than the noise and count fully, misaligned structure
    drops out. Fusion uses the restored frames (not the fused ones), so nothing is averaged twice.

    The residual error of a denoiser is partly independent from frame to frame, so averaging
    aligned restored frames removes more of it: +1.0 to +1.6 dB for Frame2Frame and RfR on the
    benchmark's videos of real images and +1.8 to +2.5 on synthetic cells, at σ = 25 and with
    Poisson-Gaussian noise (``benchmarks/bench_video.py``) — the idea of video BM3D's temporal
    grouping (Dabov, Foi, Egiazarian 2007) applied to a network's outputs. Memory:
    ``2 * radius * Z + 1`` restored planes (within :data:`FUSE_BYTES`).
    """

    warp_error = 0.1
    divergence = 0.75
    dilation = 2
    window = 5

    def __init__(self, planes: Planes, device, radius: int):
        self.planes, self.device, self.depth = planes, device, planes.n_depth
        plane_bytes = int(np.prod(planes.hw)) * (planes.c + 4) * 4  # and its two flows
        fit = max(0, (FUSE_BYTES // plane_bytes - 1) // (2 * self.depth))
        self.radius = min(radius, planes.n_frames - 1, fit)
        if self.radius < min(radius, planes.n_frames - 1):
            logger.warning("temporal fusion over %d frame(s) each side instead of %d: the frames "
                           "of %d Z planes would not fit in %d MiB", self.radius, radius,
                           self.depth, FUSE_BYTES // 2**20)
        self.held: dict[int, Any] = {}  # restored planes on the device, by index
        self.flows: dict[tuple[int, int], object] = {}  # (i, j): flow from plane i to j
        self.last, self.next, self.seconds = -1, 0, 0.0

    def push(self, i: int, plane: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Take restored plane ``i`` (the next in order); return the planes now ready to write."""
        from .train import to_device

        if self.radius == 0:
            self.next = i + 1
            return [(i, plane)]
        self.held[i] = to_device(plane[None], self.device)
        self.last = i
        return self._ready(final=False, fuse=True)

    def flush(self, fuse: bool = True) -> list[tuple[int, np.ndarray]]:
        """The planes still held, fused with the neighbours that arrived (``fuse=False``, after a
        Stop: as restored, at once)."""
        return self._ready(final=True, fuse=fuse)

    def _ready(self, *, final: bool, fuse: bool) -> list[tuple[int, np.ndarray]]:
        ready = []
        while self.next <= self.last:
            t, p = divmod(self.next, self.depth)
            needed = min(t + self.radius, self.planes.n_frames - 1) * self.depth + p
            if needed > self.last and not final:
                break
            i = self.next
            t0 = time.perf_counter()
            plane = self._fuse(i) if fuse else self.held[i]
            ready.append((i, plane[0].permute(1, 2, 0).cpu().numpy()))
            self.seconds += time.perf_counter() - t0
            self.next += 1
            first = self.next - self.radius * self.depth  # what later frames may still need
            for j in [j for j in self.held if j < first]:
                del self.held[j]
            for pair in [pair for pair in self.flows if pair[0] < first]:
                del self.flows[pair]
        return ready

    def _unit_flows(self, pairs) -> None:
        """The flows between consecutive frames ``(i, j)`` not yet known, in one call."""
        import torch

        from ..physics.flow import tvl1_pairs

        missing = [pair for pair in dict.fromkeys(pairs) if pair not in self.flows]
        if not missing:
            return
        flows = tvl1_pairs(torch.cat([self.held[a] for a, _ in missing]).mean(1),
                           torch.cat([self.held[b] for _, b in missing]).mean(1))
        for k, pair in enumerate(missing):
            self.flows[pair] = flows[k:k + 1]

    def _fuse(self, i: int):
        import torch
        import torch.nn.functional as F

        from ..physics.flow import occlusion_mask, warp
        from .train import to_device

        t, z = i // self.depth, self.depth
        chains = []  # the neighbours held, outwards in each direction, consecutive
        for sign in (-1, 1):
            chain = []
            for k in range(1, self.radius + 1):
                j = i + sign * k * z
                if not 0 <= t + sign * k < self.planes.n_frames or j not in self.held:
                    break
                chain.append(j)
            chains.append(chain)
        if not any(chains):
            return self.held[i]
        self._unit_flows([(a, b) for c in chains for a, b in zip([i] + c[:-1], c, strict=False)])
        flows, others = [], []
        for chain in chains:  # t -> t ± k composed of consecutive flows: two new flows a frame
            total, a = None, i
            for j in chain:
                unit = self.flows[(a, j)]
                total = unit if total is None else total + warp(unit, total)[0]
                flows.append(total)
                others.append(self.held[j])
                a = j
        flow, moving, ref = torch.cat(flows), torch.cat(others), self.held[i]
        warped, inside = warp(moving, flow, mode="bicubic")
        trusted = occlusion_mask(flow, warped, ref, inside, divergence=self.divergence,
                                 warp_error=self.warp_error, dilation=self.dilation)
        sigma2 = (to_device(self.planes[i][None], self.device) - ref).var().clamp_min(1e-10)
        d = F.avg_pool2d(((warped - ref) ** 2).mean(1, keepdim=True), self.window, stride=1,
                         padding=self.window // 2, count_include_pad=False)
        weight = trusted * torch.exp(-d / sigma2)
        return (ref + (weight * warped).sum(0, keepdim=True)) / (1 + weight.sum(0, keepdim=True))

    def report(self) -> dict:
        return {"fusion_radius": self.radius, "fusion_seconds": round(self.seconds, 3)}
