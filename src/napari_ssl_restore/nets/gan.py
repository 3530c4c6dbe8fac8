"""Generators and discriminators for the adversarial methods (physics-based GAN, Cycle-Dehaze,
disentangled deblurring), written once.

- :class:`ResnetGenerator`: the image-to-image generator of CycleGAN (Zhu et al., ICCV 2017) that
  Physics-GAN (Pan et al., TPAMI 2020) and Cycle-Dehaze (Engin et al., CVPRW 2018) build on — a 7×7
  stem, strided downsampling, residual blocks, upsampling, a 7×7 head — with two changes for
  microscopy: upsampling is *resize-convolution* (nearest ×2 then a 3×3 convolution) instead of a
  transposed convolution, which leaves no checkerboard (Odena et al., Distill 2016); and an optional
  global skip (the output is the input, resized, plus a correction), so an untrained generator starts
  near the identity and a ×2/×4 super-resolution generator starts near nearest-neighbour upsampling.
- :class:`PatchDiscriminator`: the PatchGAN of pix2pix (Isola et al., CVPR 2017): with 3 strided
  layers of 64·2^k filters it scores overlapping 70×70 patches; it returns its intermediate features
  too, for the feature-matching term (pix2pixHD, Wang et al., CVPR 2018) that stands in for the VGG
  perceptual loss where no pretrained weights can be downloaded. Spectral normalisation optional
  (Miyato et al., ICLR 2018); :class:`MultiScaleDiscriminator` runs one per scale.

Normalisation: ``"instance"`` (CycleGAN's) normalises each image by its own statistics, so tiles of
one plane normalised separately disagree at their seams; predict whole planes where they fit.
``"group"`` has the same caveat; ``"none"`` tiles exactly. Every module here is fully convolutional.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'instance', 'group' or 'none'; got {kind!r}")


class _Residual(nn.Module):
    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(norm, channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(norm, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _ResizeConv(nn.Module):
    """Nearest-neighbour ×2 upsampling, then a 3×3 convolution: no checkerboard artefacts."""

    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3),
                                  _norm(norm, cout), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(F.interpolate(x, scale_factor=2, mode="nearest"))


def pad_to_multiple(x: torch.Tensor, m: int) -> torch.Tensor:
    """``x`` padded at the bottom/right to multiples of ``m`` (reflect, or replicate where the image
    is too small to reflect); crop the result back after."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if not (ph or pw):
        return x
    return F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")


def encoder_layers(in_channels: int, features: int, downs: int, blocks: int,
                   norm: str) -> tuple[list[nn.Module], int]:
    """A 7×7 stem, ``downs`` stride-2 convolutions (channels doubling) and ``blocks`` residual
    blocks; returns the layers and their output channels."""
    layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, features, 7),
                               _norm(norm, features), nn.ReLU(inplace=True)]
    ch = features
    for _ in range(downs):
        layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), _norm(norm, ch * 2),
                   nn.ReLU(inplace=True)]
        ch *= 2
    layers += [_Residual(ch, norm) for _ in range(blocks)]
    return layers, ch


def decoder_layers(channels: int, blocks: int, ups: int, norm: str) -> tuple[list[nn.Module], int]:
    """``blocks`` residual blocks then ``ups`` resize-convolutions (channels halving while above
    the encoder's first width: ``ups`` beyond that keep the width, for super-resolution)."""
    layers: list[nn.Module] = [_Residual(channels, norm) for _ in range(blocks)]
    ch = channels
    for _ in range(ups):
        layers.append(_ResizeConv(ch, ch // 2, norm))
        ch //= 2
    return layers, ch


def _init(module: nn.Module, zero_last: nn.Conv2d | None, norm: str) -> None:
    """CycleGAN's N(0, 0.02) weights where normalisation layers rescale the activations; without
    them those weights shrink the signal layer after layer (to ~1e-6 after a dozen convolutions:
    the network cannot learn), so there He initialisation, and each residual block's last
    convolution starts at zero (the block starts as the identity)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            if norm == "none":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            else:
                nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
    if norm == "none":
        for m in module.modules():
            if isinstance(m, _Residual):
                nn.init.zeros_(m.body[5].weight)
    if zero_last is not None:
        nn.init.zeros_(zero_last.weight)


class ResnetGenerator(nn.Module):
    """CycleGAN's ResNet generator with resize-convolution upsampling and a global skip.

    Parameters
    ----------
    in_channels, out_channels : int
    features : int
        Channels of the first layer (64 in CycleGAN); doubled at each of ``downs`` downsamplings.
    blocks : int
        Residual blocks at the lowest resolution (9 for 256² crops in CycleGAN, 6 for ≤128²).
    downs : int
        Stride-2 downsamplings (2 in CycleGAN); inputs need not be multiples of ``2**downs``.
    scale : int
        Output size factor (1, 2, 4...: super-resolution adds ``log2(scale)`` resize-convolutions).
    norm : {"instance", "group", "none"}
    skip : bool
        Output = input (resized to the output size, channels matched) + the network's correction;
        the last layer starts at zero, so an untrained generator is that resized input.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, features: int = 64,
                 blocks: int = 9, downs: int = 2, scale: int = 1, norm: str = "instance",
                 skip: bool = True):
        super().__init__()
        if scale < 1 or scale & (scale - 1):
            raise ValueError(f"scale must be a power of two (1, 2, 4...); got {scale}")
        if skip and in_channels != out_channels:
            raise ValueError("a global skip needs in_channels == out_channels.")
        self.config = {"in_channels": in_channels, "out_channels": out_channels,
                       "features": features, "blocks": blocks, "downs": downs, "scale": scale,
                       "norm": norm, "skip": skip}
        self.downs, self.scale, self.skip = downs, scale, skip
        layers, ch = encoder_layers(in_channels, features, downs, blocks, norm)
        up, ch = decoder_layers(ch, 0, downs, norm)
        layers += up
        for _ in range(scale.bit_length() - 1):  # super-resolution stages
            layers.append(_ResizeConv(ch, ch, norm))
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ch, out_channels, 7))
        _init(self, self.head[1] if skip else None, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = self.head(self.body(pad_to_multiple(x, 2 ** self.downs)))
        out = out[..., : h * self.scale, : w * self.scale]
        if not self.skip:
            return out
        base = x if self.scale == 1 else F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return base + out


def _sn(module: nn.Module, spectral: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(module) if spectral else module


class PatchDiscriminator(nn.Module):
    """PatchGAN: a map of real/fake scores, one per overlapping patch (70×70 with ``layers=3``).

    ``forward`` returns ``(scores, features)``: the ``(N, 1, h, w)`` score map and the list of
    intermediate activations (for feature matching).
    """

    def __init__(self, in_channels: int = 1, features: int = 64, layers: int = 3,
                 norm: str = "instance", spectral: bool = False):
        super().__init__()
        self.config = {"in_channels": in_channels, "features": features, "layers": layers,
                       "norm": norm, "spectral": spectral}
        blocks = [nn.Sequential(_sn(nn.Conv2d(in_channels, features, 4, 2, 1), spectral),
                                nn.LeakyReLU(0.2, inplace=True))]
        ch = features
        for k in range(1, layers + 1):
            stride = 2 if k < layers else 1
            out = features * min(2 ** k, 8)
            blocks.append(nn.Sequential(_sn(nn.Conv2d(ch, out, 4, stride, 1), spectral),
                                        _norm("none" if spectral else norm, out),
                                        nn.LeakyReLU(0.2, inplace=True)))
            ch = out
        self.blocks = nn.ModuleList(blocks)
        self.head = _sn(nn.Conv2d(ch, 1, 4, 1, 1), spectral)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                w = getattr(m, "parametrizations", None)
                target = w.weight.original if w is not None else m.weight
                nn.init.normal_(target, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return self.head(x), feats


class MultiScaleDiscriminator(nn.Module):
    """``scales`` PatchGANs, the ``k``-th on the input average-pooled ``k`` times (pix2pixHD):
    coarse ones judge large structures, the first one fine texture. Returns a list of
    ``(scores, features)``, one per scale."""

    def __init__(self, in_channels: int = 1, features: int = 64, layers: int = 3,
                 scales: int = 2, norm: str = "instance", spectral: bool = False):
        super().__init__()
        self.config = {"in_channels": in_channels, "features": features, "layers": layers,
                       "scales": scales, "norm": norm, "spectral": spectral}
        self.nets = nn.ModuleList(PatchDiscriminator(in_channels, features, layers, norm,
                                                     spectral) for _ in range(scales))

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        out = []
        for k, net in enumerate(self.nets):
            if k:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(net(x))
        return out


# --- disentangled deblurring (Lu, Chen, Chellappa; CVPR 2019) -------------------------------------

class CodeDecoder(nn.Module):
    """Residual blocks and resize-convolutions from a content map to an image *correction* (the
    last layer starts at zero); with ``code > 0`` a vector code (the blur code) is broadcast over
    the content map and fused by a 1×1 convolution first."""

    def __init__(self, channels: int, out_channels: int, blocks: int, ups: int, norm: str,
                 code: int = 0):
        super().__init__()
        self.fuse = nn.Conv2d(channels + code, channels, 1) if code else None
        layers, ch = decoder_layers(channels, blocks, ups, norm)
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ch, out_channels, 7))
        _init(self, self.head[1], norm)

    def forward(self, content: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        if self.fuse is not None:
            z = code[:, :, None, None].expand(-1, -1, *content.shape[-2:])
            content = self.fuse(torch.cat([content, z], 1))
        return self.head(self.body(content))


class BlurEncoder(nn.Module):
    """Image -> the mean and log-variance of a ``code``-dimensional blur code: strided 4×4
    convolutions, global average pooling and a linear layer (Lu et al.: 8-d code)."""

    def __init__(self, in_channels: int = 1, features: int = 16, code: int = 8, layers: int = 4):
        super().__init__()
        convs: list[nn.Module] = []
        ch = in_channels
        for k in range(layers):
            out = features * min(2 ** k, 4)
            convs += [nn.Conv2d(ch, out, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            ch = out
        self.body = nn.Sequential(*convs, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(ch, 2 * code)
        self.code = code

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.body(x))
        return out[:, : self.code], out[:, self.code:]


class ContentDeblurrer(nn.Module):
    """What disentangled deblurring applies: the blurred domain's content encoder (its last
    residual block, ``shared``, is shared with the sharp domain's encoder while training, so both
    map into one content space) and the deblurring decoder, with a global skip (output = input +
    correction; starts as the identity)."""

    def __init__(self, in_channels: int = 1, features: int = 32, blocks: int = 3, downs: int = 2,
                 norm: str = "none"):
        super().__init__()
        self.config = {"in_channels": in_channels, "features": features, "blocks": blocks,
                       "downs": downs, "norm": norm}
        self.downs = downs
        layers, ch = encoder_layers(in_channels, features, downs, max(blocks - 1, 0), norm)
        self.encoder = nn.Sequential(*layers)
        self.shared = _Residual(ch, norm)
        self.decoder = CodeDecoder(ch, in_channels, blocks, downs, norm)
        _init(self.encoder, None, norm)
        _init(self.shared, None, norm)
        self.content_channels = ch

    def content(self, x: torch.Tensor) -> torch.Tensor:
        """Content map of a blurred image (its sides multiples of ``2**downs``)."""
        return self.shared(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = pad_to_multiple(x, 2 ** self.downs)
        return x + self.decoder(self.content(y))[..., :h, :w]


class Reblurrer(nn.Module):
    """The sharp domain's side while training: its content encoder (ending in the deblurrer's
    ``shared`` block) and the decoder that re-blurs sharp content with a blur code (output =
    input + correction)."""

    def __init__(self, deblurrer: ContentDeblurrer, code: int = 8):
        super().__init__()
        cfg = deblurrer.config
        layers, ch = encoder_layers(cfg["in_channels"], cfg["features"], cfg["downs"],
                                    max(cfg["blocks"] - 1, 0), cfg["norm"])
        self.encoder = nn.Sequential(*layers)
        self.shared = deblurrer.shared  # the same module: one content space for both domains
        self.decoder = CodeDecoder(ch, cfg["in_channels"], cfg["blocks"], cfg["downs"],
                                   cfg["norm"], code=code)
        _init(self.encoder, None, cfg["norm"])
        self.downs = cfg["downs"]

    def content(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(self.encoder(x))

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = pad_to_multiple(x, 2 ** self.downs)
        return x + self.decoder(self.content(y), code)[..., :h, :w]


class HazeTranslation(nn.Module):
    """Cycle-Dehaze's clear → hazy translation ``F`` constrained by the atmospheric model (Koschmieder;
    the Dark Channel Prior's ``I = J t + A (1 - t)``, He et al. 2009): ``F(x, t) = x t' + A' (1 - t')``
    with ``t' = t ** γ``, where ``t`` is the transmission the Dark Channel Prior estimated on a crop
    of the hazy input and ``A`` its airlight. What ``F`` learns is small and global: the exponent
    ``γ`` (ω < 1 and the minimum filter bias DCP's ``t``) and a shift of the airlight per channel,
    both starting at DCP's estimate (γ = 1, shift 0). ``airlight``: ``(C,)``."""

    def __init__(self, airlight):
        super().__init__()
        a = torch.as_tensor(airlight, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.register_buffer("airlight", a)
        self.log_gamma = nn.Parameter(torch.zeros(()))
        self.shift = nn.Parameter(torch.zeros_like(a))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        from ..physics.operators import hazed

        t = t.clamp(1e-3, 1.0) ** self.log_gamma.exp()
        return hazed(x, t, self.airlight + self.shift)

    def describe(self) -> dict:
        """The learned correction of DCP's estimates."""
        return {"gamma": round(float(self.log_gamma.detach().exp()), 4),
                "airlight_shift": [round(float(v), 4) for v in self.shift.detach().flatten()]}


class BlurKernels(nn.Module):
    """Disentangled deblurring's physical re-blurring decoder: a blur code → a normalised
    ``size × size`` blur kernel (a linear layer and a softmax over its taps; it starts as a
    Gaussian of std ``start`` whatever the code), and a learned gain and offset per channel that
    take sharp examples to the input's intensity units (blurring lowers peaks; start 1 and 0)."""

    def __init__(self, code: int = 8, size: int = 15, start: float = 1.5, channels: int = 1):
        super().__init__()
        r = size // 2
        yy, xx = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0),
                                indexing="ij")
        self.size = 2 * r + 1
        self.linear = nn.Linear(code, self.size ** 2)
        nn.init.normal_(self.linear.weight, std=0.01)
        with torch.no_grad():
            self.linear.bias.copy_((-(yy ** 2 + xx ** 2) / (2 * start ** 2)).flatten())
        self.log_gain = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.offset = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        """``(N, code)`` → ``(N, size, size)`` kernels summing to 1."""
        taps = torch.softmax(self.linear(code), dim=1)
        return taps.view(-1, self.size, self.size)

    def units(self, x: torch.Tensor) -> torch.Tensor:
        """Blurred sharp content in the input's intensity units."""
        return x * self.log_gain.exp() + self.offset

    def width(self, code: torch.Tensor) -> float:
        """The mean std (pixels) of the kernels of ``code``: what the run reports."""
        k = self(code).detach()
        r = self.size // 2
        grid = torch.arange(-r, r + 1.0, device=k.device)
        py, px = k.sum(2), k.sum(1)
        var = ((py * grid ** 2).sum(1) - (py * grid).sum(1) ** 2
               + (px * grid ** 2).sum(1) - (px * grid).sum(1) ** 2) / 2
        return float(var.clamp(min=0).sqrt().mean())


class BlurShapes(BlurKernels):
    """A physical family of blur kernels for the re-blurring decoder: a Gaussian of std ``σ``
    (a microscope's or a lens's PSF) convolved with a disc of radius ``r`` (defocus) drawn along a
    segment of length ``L`` at angle ``θ`` (motion during the exposure: the disc swept along a
    line, a "stadium"). The blur code decodes into these four numbers (a linear layer; ``σ ≥ 0.3``,
    ``r, L ≥ 0`` through softplus, ``θ`` from a 2-vector), so the code has a handful of physical
    degrees of freedom to carry instead of ``size²`` free taps; it starts as a Gaussian of std
    ``start`` with ``r`` and ``L`` near 0, whatever the code. The kernel is rendered through the
    Fourier domain (the Gaussian's transfer function times the soft-edged stadium's spectrum) on
    a grid twice the kernel's side, cropped and normalised, so every number gets a gradient."""

    def __init__(self, code: int = 8, size: int = 15, start: float = 1.5, channels: int = 1):
        super().__init__(code, size, start, channels)
        self.linear = nn.Linear(code, 5)
        nn.init.normal_(self.linear.weight, std=0.01)
        soft_inv = lambda v: float(np.log(np.expm1(v)))  # noqa: E731
        with torch.no_grad():
            self.linear.bias.copy_(torch.tensor([soft_inv(start - 0.3), soft_inv(0.1),
                                                 soft_inv(0.1), 1.0, 0.0]))
        n = 2 * self.size + 1
        r = n // 2
        yy, xx = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0),
                                indexing="ij")
        fy, fx = torch.meshgrid(torch.fft.fftfreq(n), torch.fft.fftfreq(n), indexing="ij")
        self.register_buffer("yy", yy, persistent=False)
        self.register_buffer("xx", xx, persistent=False)
        self.register_buffer("f2", fy ** 2 + fx ** 2, persistent=False)

    def shapes(self, code: torch.Tensor) -> dict:
        """The decoded blur: ``sigma``, ``radius``, ``length`` (pixels) and ``angle`` (radians)
        per code, ``(N,)`` tensors."""
        raw = self.linear(code)
        return {"sigma": 0.3 + F.softplus(raw[:, 0]), "radius": F.softplus(raw[:, 1]),
                "length": F.softplus(raw[:, 2]),
                "angle": torch.atan2(raw[:, 4], raw[:, 3])}

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        b = self.shapes(code)
        c, s = b["angle"].cos()[:, None, None], b["angle"].sin()[:, None, None]
        along = self.xx * c + self.yy * s
        across = -self.xx * s + self.yy * c
        half = b["length"][:, None, None] / 2
        dist = torch.sqrt((along.abs() - half).clamp(min=0) ** 2 + across ** 2 + 1e-6)
        stadium = torch.sigmoid((b["radius"][:, None, None] + 0.5 - dist) / 0.25)
        otf = torch.exp(-2 * np.pi ** 2 * b["sigma"][:, None, None] ** 2 * self.f2)
        centred = torch.fft.ifftshift(stadium, dim=(-2, -1))
        k = torch.fft.ifft2(torch.fft.fft2(centred) * otf).real
        k = torch.fft.fftshift(k, dim=(-2, -1))
        r, m = self.size // 2, k.shape[-1] // 2
        k = k[:, m - r:m + r + 1, m - r:m + r + 1].clamp(min=0)
        return k / k.sum((-2, -1), keepdim=True)
