"""The losses of adversarial training, as plain tensor functions: least squares GAN losses,
discriminator feature matching, and a perceptual loss on features of a network the project ships.

Least squares (LSGAN; Mao et al., ICCV 2017), with one-sided label smoothing (real target 0.9;
Salimans et al., NeurIPS 2016), as Cycle-Dehaze and the pytorch-CycleGAN code that Physics-GAN
builds on; discriminator feature matching (pix2pixHD) as the perceptual term that needs no
downloaded weights. A discriminator's output is ``(scores, features)``, or a list of them (one per
scale, :class:`~napari_ssl_restore.nets.gan.MultiScaleDiscriminator`).
"""
from __future__ import annotations

REAL_LABEL = 0.9
"""Target of real examples for the discriminator (one-sided label smoothing)."""


def _outputs(d_out) -> list:
    """A discriminator's output as a list of ``(scores, features)`` (one per scale)."""
    return d_out if isinstance(d_out, list) else [d_out]


def discriminator_loss(real_out, fake_out, real_label: float = REAL_LABEL):
    """LSGAN discriminator loss: real scores towards ``real_label``, fake scores towards 0,
    averaged over scales (each ``(scores, features)`` or a list of them)."""
    reals, fakes = _outputs(real_out), _outputs(fake_out)
    total = 0.0
    for (r, _), (f, _) in zip(reals, fakes, strict=False):
        total = total + 0.5 * (((r - real_label) ** 2).mean() + (f ** 2).mean())
    return total / len(reals)


def generator_loss(fake_out):
    """LSGAN generator loss: the discriminator's scores of fakes towards 1 (no smoothing)."""
    fakes = _outputs(fake_out)
    total = 0.0
    for f, _ in fakes:
        total = total + ((f - 1.0) ** 2).mean()
    return total / len(fakes)


def feature_matching(real_out, fake_out):
    """L1 between the discriminator's features of real and fake images (pix2pixHD), averaged
    over layers and scales; the real side carries no gradient. Real and fake batches must have the
    same shape (aligned pairs, e.g. a cycle's input and reconstruction)."""
    reals, fakes = _outputs(real_out), _outputs(fake_out)
    total, n = 0.0, 0
    for (_, rf), (_, ff) in zip(reals, fakes, strict=False):
        for r, f in zip(rf, ff, strict=False):
            total = total + (f - r.detach()).abs().mean()
            n += 1
    return total / max(n, 1)


PERCEPTUAL_MODEL = "dncnn-blind-gray"
"""The shipped network whose activations serve as perceptual features: the first release's blind
DnCNN, kept by name so the unpaired methods do not change when the default denoiser does."""


def perceptual_features(device, layers=(2, 4, 8)):
    """A frozen feature extractor the project ships: the activations after convolutions
    ``layers`` (1-based) of :data:`PERCEPTUAL_MODEL` (a blind DnCNN trained on natural and
    synthetic images; receptive fields 5, 9 and 17 pixels) — where the papers used ImageNet VGG
    features, which cannot be downloaded here. Multi-channel images are passed channel by channel.
    Returns ``features(x) -> list of tensors``."""
    import torch

    from ..core.models import build, shipped_model

    net = build(shipped_model(PERCEPTUAL_MODEL), device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    body = net.body
    relus = [k for k, m in enumerate(body) if isinstance(m, torch.nn.ReLU)]
    cut = [relus[min(n, len(relus)) - 1] for n in layers]

    def features(x):
        h = x.reshape(-1, 1, *x.shape[-2:])
        out = []
        for k, module in enumerate(body[: cut[-1] + 1]):
            h = module(h) if not isinstance(module, torch.nn.ReLU) else torch.relu(h)
            if k in cut:
                out.append(h)
        return out

    return features


def perceptual_loss(features, a, b):
    """Mean squared difference of ``features`` of ``a`` and ``b``, averaged over layers."""
    total = 0.0
    fa, fb = features(a), features(b)
    for x, y in zip(fa, fb, strict=False):
        total = total + ((x - y) ** 2).mean()
    return total / len(fa)
