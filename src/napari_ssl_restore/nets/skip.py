"""The encoder-decoder with skip connections used as a Deep Image Prior generator.

Ulyanov, Vedaldi & Lempitsky, "Deep Image Prior", CVPR 2018 (supplementary material, Fig. 21): ``depth``
scales; at each scale a strided 3×3 conv goes down, two 3×3 convs process, the deeper scale's output is
upsampled and concatenated with a 1×1 "skip" projection of this scale's input, then a 3×3 and a 1×1
conv go up. BatchNorm + LeakyReLU(0.2) everywhere, reflection padding, sigmoid output. The paper's
defaults (128 channels at 5 scales, 4 skip channels) give about 2.2 M parameters.
"""
from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    pad = (k - 1) // 2
    layers: list[nn.Module] = []
    if pad:
        layers.append(nn.ReflectionPad2d(pad))
    layers.append(nn.Conv2d(cin, cout, k, stride=stride, bias=True))
    return nn.Sequential(*layers)


def _bn_act(c: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(c), nn.LeakyReLU(0.2, inplace=True)]


class _Level(nn.Module):
    """One scale: skip branch and down -> deeper -> up branch, merged and convolved."""

    def __init__(self, cin: int, down: int, up: int, skip: int, deeper: nn.Module | None,
                 deeper_out: int, upsample_mode: str):
        super().__init__()
        self.skip = nn.Sequential(_conv(cin, skip, 1), *_bn_act(skip)) if skip > 0 else None
        self.down = nn.Sequential(_conv(cin, down, 3, stride=2), *_bn_act(down),
                                  _conv(down, down, 3), *_bn_act(down))
        self.deeper = deeper
        self.upsample_mode = upsample_mode
        merged = skip + (deeper_out if deeper is not None else down)
        self.merge = nn.Sequential(nn.BatchNorm2d(merged), _conv(merged, up, 3), *_bn_act(up),
                                   _conv(up, up, 1), *_bn_act(up))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(x)
        if self.deeper is not None:
            y = self.deeper(y)
        kw = {"align_corners": False} if self.upsample_mode == "bilinear" else {}
        y = nn.functional.interpolate(y, size=x.shape[-2:], mode=self.upsample_mode, **kw)
        if self.skip is not None:
            y = torch.cat([self.skip(x), y], dim=1)
        return self.merge(y)


class SkipNet(nn.Module):
    """DIP hourglass with skips. Input ``(N, in_channels, H, W)`` -> ``(N, out_channels, H, W)``.

    ``H`` and ``W`` need not be multiples of ``2**depth``: each level upsamples to its input's size.
    """

    def __init__(self, in_channels: int = 32, out_channels: int = 3, channels: int = 128,
                 depth: int = 5, skip_channels: int = 4, upsample_mode: str = "bilinear",
                 sigmoid: bool = True):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1; got {depth}")
        deeper: nn.Module | None = None
        for level in reversed(range(depth)):
            cin = in_channels if level == 0 else channels
            deeper = _Level(cin, channels, channels, skip_channels, deeper, channels, upsample_mode)
        self.body = deeper
        self.head = nn.Conv2d(channels, out_channels, 1)
        self.sigmoid = sigmoid

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = self.head(self.body(z))
        return torch.sigmoid(y) if self.sigmoid else y


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
