"""The U-Net of Noise2Noise (Lehtinen et al., ICML 2018, appendix A.1).

Encoder: two 3×3 convs of ``features`` channels, then ``depth`` times (max-pool 2, 3×3 conv); decoder:
``depth`` times (nearest upsample ×2, concatenate the matching encoder output, two 3×3 convs of
``2 features`` channels; the last level ends with 64 and 32 channels), then a linear 1×1 output conv.
LeakyReLU(0.1) after every conv but the last. ``features=48, depth=5`` is the paper's network
(about 1 M parameters); ``features=32, depth=4`` is a smaller, faster option. Inputs must be
multiples of ``2**depth`` in Y and X (:func:`pad_to_multiple`).

``residual=True`` (not in the paper; for the pretrained denoiser candidates of
``scripts/train_denoiser.py``) makes the output conv predict the noise and returns ``x - noise``,
as DnCNN does (Zhang et al. 2017), so a denoiser need not learn to copy its input.
``noise_map=True`` (the noise-level-aware candidate, after FFDNet: Zhang, Zuo & Zhang, IEEE TIP
2018) takes one more input channel after the image's, the noise standard deviation at each pixel
(:func:`napari_ssl_restore.physics.estimate.noise_std_map`), so one network serves every noise
level and photon noise whose level varies across the image; the output has the image's channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.1, inplace=True))


class UNet(nn.Module):
    def __init__(self, in_channels: int = 1, out_channels: int = 1, features: int = 48,
                 depth: int = 5, residual: bool = False, noise_map: bool = False):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1; got {depth}")
        if residual and in_channels != out_channels:
            raise ValueError("a residual U-Net predicts the noise: in_channels must equal "
                             "out_channels.")
        self.depth, self.residual, self.noise_map = depth, residual, noise_map
        self.config = {"in_channels": in_channels, "out_channels": out_channels,
                       "features": features, "depth": depth}
        if residual:  # (only then, so the configs of earlier checkpoints stay as they were)
            self.config["residual"] = True
        if noise_map:
            self.config["noise_map"] = True
        f, inputs = features, in_channels + int(noise_map)
        self.head = nn.Sequential(_conv(inputs, f), _conv(f, f))  # enc_conv0, enc_conv1
        self.encoder = nn.ModuleList([_conv(f, f) for _ in range(depth)])  # enc_conv2..6
        # decoder levels from the bottom up: (upsampled + pooled skip) -> 2f, 2f
        self.decoder = nn.ModuleList(
            [nn.Sequential(_conv((f if i == 0 else 2 * f) + f, 2 * f), _conv(2 * f, 2 * f))
             for i in range(depth - 1)])
        last_in = (f if depth == 1 else 2 * f) + inputs
        self.last = nn.Sequential(_conv(last_in, 64), _conv(64, 32))  # dec_conv1a, dec_conv1b
        self.tail = nn.Conv2d(32, out_channels, 1)  # dec_conv1c, linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        y = F.max_pool2d(self.head(x), 2)
        for conv in self.encoder[:-1]:
            pooled.append(y)
            y = F.max_pool2d(conv(y), 2)
        y = self.encoder[-1](y)
        for conv in self.decoder:
            y = F.interpolate(y, scale_factor=2, mode="nearest")
            y = conv(torch.cat([y, pooled.pop()], dim=1))
        y = F.interpolate(y, scale_factor=2, mode="nearest")
        y = self.tail(self.last(torch.cat([y, x], dim=1)))
        if not self.residual:
            return y
        return (x[:, :-1] if self.noise_map else x) - y


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad ``(N, C, H, W)`` at the bottom/right to multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if h > ph and w > pw else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)
