"""A DnCNN-style residual denoiser (Zhang, Zuo, Chen, Meng, Zhang; IEEE TIP 2017).

``depth`` 3×3 convolutions of ``features`` channels with ReLU in between; the network predicts the
noise and the output is ``x - noise`` (residual learning). Differences from the paper's DnCNN-S
(17 layers, 64 channels, batch normalisation): no batch normalisation, because Frame2Frame and
Restore-from-Restored fine-tune it on one frame at a time where batch statistics are meaningless,
and a configurable (by default smaller) size so it trains and fine-tunes on a laptop CPU. Fully
convolutional: any image size, no padding to multiples.
"""
from __future__ import annotations

import torch
from torch import nn


class DnCNN(nn.Module):
    def __init__(self, in_channels: int = 1, out_channels: int = 1, features: int = 64,
                 depth: int = 17):
        super().__init__()
        if depth < 2:
            raise ValueError(f"DnCNN depth must be >= 2; got {depth}")
        if in_channels != out_channels:
            raise ValueError("DnCNN predicts a residual: in_channels must equal out_channels.")
        self.config = {"in_channels": in_channels, "out_channels": out_channels,
                       "features": features, "depth": depth}
        layers: list[nn.Module] = [nn.Conv2d(in_channels, features, 3, padding=1),
                                   nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(features, features, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(features, out_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.zeros_(layers[-1].weight)  # starts as the identity map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)
