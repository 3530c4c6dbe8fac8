"""The adversarial parts shared by the GAN methods: generators, PatchGAN, losses, pool, EMA, and a
discriminator step inside the engine's one training loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_ssl_restore.core.progress import drive
from napari_ssl_restore.engine.gan_losses import discriminator_loss, feature_matching, generator_loss
from napari_ssl_restore.engine.gan_parts import EMA, Critic, ImagePool
from napari_ssl_restore.engine.train import optimise, seeded_init
from napari_ssl_restore.nets.gan import MultiScaleDiscriminator, PatchDiscriminator, ResnetGenerator


def _receptive_field(net, size=160) -> int:
    """Extent of the input pixels that change the centre score of a discriminator."""
    x = torch.zeros(1, 1, size, size, requires_grad=True)
    scores, _ = net(x)
    h, w = scores.shape[-2:]
    scores[0, 0, h // 2, w // 2].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    return int(rows.max() - rows.min() + 1)


def test_patchgan_scores_70_pixel_patches():
    with seeded_init(0):
        net = PatchDiscriminator(1, features=8, layers=3, norm="none")
    assert _receptive_field(net) == 70
    scores, feats = net(torch.rand(2, 1, 64, 64))
    assert scores.shape[:2] == (2, 1) and len(feats) == 4


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_generator_shapes_identity_start_and_no_checkerboard(scale):
    with seeded_init(0):
        g = ResnetGenerator(1, 1, features=8, blocks=2, scale=scale)
    x = torch.rand(2, 1, 37, 42)  # not a multiple of 4
    y = g(x)
    assert y.shape == (2, 1, 37 * scale, 42 * scale)
    # an untrained generator is the input, resized by nearest neighbour
    base = torch.nn.functional.interpolate(x, scale_factor=scale, mode="nearest")
    torch.testing.assert_close(y, base)
    # resize-convolution: a constant image stays constant inside (no periodic pattern)
    with seeded_init(1):
        g = ResnetGenerator(1, 1, features=8, blocks=2, scale=scale, norm="none", skip=False)
    with torch.no_grad():
        out = g(torch.full((1, 1, 48, 48), 0.5))[0, 0, 12 * scale:-12 * scale,
                                                  12 * scale:-12 * scale]
    assert float(out.std()) < 1e-5


@pytest.mark.parametrize("norm", ["none", "instance"])
def test_untrained_networks_pass_a_signal_through_every_layer(norm):
    """Without normalisation layers, CycleGAN's N(0, 0.02) weights shrank activations to ~1e-6
    after a dozen convolutions and the generators could not learn; the features reaching the head
    must keep the input's order of magnitude."""
    from napari_ssl_restore.nets.gan import ContentDeblurrer

    x = torch.rand(2, 1, 64, 64)
    with seeded_init(0):
        g = ResnetGenerator(1, 1, features=16, blocks=6, norm=norm)
        d = ContentDeblurrer(1, features=16, blocks=3, norm=norm)
    with torch.no_grad():
        assert float(g.body(x).std()) > 0.05
        assert float(d.decoder.body(d.content(x)).std()) > 0.05


def test_generator_rejects_bad_settings():
    with pytest.raises(ValueError, match="power of two"):
        ResnetGenerator(scale=3)
    with pytest.raises(ValueError, match="norm"):
        ResnetGenerator(norm="batch")


def test_lsgan_losses_and_smoothing():
    real = (torch.full((1, 1, 4, 4), 0.9), [])
    fake = (torch.zeros(1, 1, 4, 4), [])
    assert float(discriminator_loss(real, fake)) == pytest.approx(0.0)
    assert float(discriminator_loss(real, fake, real_label=1.0)) == pytest.approx(0.005)
    assert float(generator_loss(fake)) == pytest.approx(1.0)
    assert float(generator_loss([fake, (torch.ones(1, 1, 2, 2), [])])) == pytest.approx(0.5)
    f = [torch.ones(1, 2, 3, 3)]
    assert float(feature_matching((None, f), (None, [torch.zeros(1, 2, 3, 3)]))) == 1.0


def test_image_pool_fills_then_mixes_deterministically():
    def run(seed):
        pool = ImagePool(4, rng=np.random.default_rng(seed))
        outs = [pool.query(torch.full((2, 1, 2, 2), float(k))) for k in range(8)]
        return torch.stack([o[:, 0, 0, 0] for o in outs])

    a = run(0)
    torch.testing.assert_close(a, run(0))
    assert a[:2].tolist() == [[0, 0], [1, 1]]  # filling: the new fakes pass through
    assert (a[2:] < torch.arange(2, 8)[:, None]).any()  # then some come from the past
    assert ImagePool(0).query(torch.ones(3, 1, 2, 2)).shape == (3, 1, 2, 2)


def test_ema_tracks_weights():
    net = torch.nn.Linear(2, 1)
    ema = EMA(net, decay=0.5)
    with torch.no_grad():
        net.weight.fill_(1.0)
    before = ema.average.weight.clone()
    ema.update()  # warm-up: decay min(0.5, 2/11)
    torch.testing.assert_close(ema.average.weight, (2 / 11) * before + (9 / 11))
    for _ in range(20):
        ema.update()
    torch.testing.assert_close(ema.average.weight, torch.ones_like(before), atol=1e-4, rtol=0)
    assert not ema.average.weight.requires_grad


def test_gan_step_in_the_engine_loop_learns_to_brighten():
    """G maps dark patches towards the clean examples' brightness through the loop, D steps in
    after_step on pooled fakes; multi-scale D, spectral norm, EMA; no NaN."""
    torch.manual_seed(0)
    with seeded_init(0):
        g = ResnetGenerator(1, 1, features=8, blocks=1, downs=1, norm="none")
        d = MultiScaleDiscriminator(1, features=8, layers=2, scales=2, spectral=True)
    critic = Critic(d, lr=2e-3, pool=8, rng=np.random.default_rng(0))
    ema = EMA(g, decay=0.9)
    opt = torch.optim.Adam(g.parameters(), lr=2e-3, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(0)
    dark = torch.rand(64, 1, 24, 24, generator=gen) * 0.2
    clean = 0.6 + torch.rand(64, 1, 24, 24, generator=gen) * 0.2
    state = {}

    def step(it):
        k = torch.randint(64, (8,), generator=gen)
        fake = g(dark[k])
        state["fake"], state["real"] = fake, clean[k]
        return generator_loss(critic.judge(fake))

    def after_step(it):
        critic.update(state["real"], state["fake"])
        ema.update()

    res = drive(optimise(step, opt, 150, after_step=after_step))
    assert not res.stopped and np.isfinite(res.loss)
    with torch.no_grad():
        moved = float(ema.average(dark[:8]).mean() - dark[:8].mean())
    assert moved > 0.2, moved  # the adversarial term pulled the outputs towards the clean set
    assert critic.last_loss is not None and torch.isfinite(critic.last_loss)
