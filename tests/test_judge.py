"""The J-invariant score (Noise2Self) ranks denoisers as their true error does."""
import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_ssl_restore.engine.judge import grid_offsets, hide, j_invariant_loss


def _field(seed=0, size=96):
    rng = np.random.default_rng(seed)
    y = ndi.gaussian_filter(rng.random((size, size)), 3)
    y = (y - y.min()) / (y.max() - y.min())
    return y, y + 0.1 * rng.standard_normal(y.shape)


def test_offsets_cover_rows_columns_and_pixels():
    assert sorted(grid_offsets(4)) == [(a, b) for a in range(4) for b in range(4)]
    four = grid_offsets(4, 4)
    assert sorted(a for a, _ in four) == [0, 1, 2, 3] and sorted(b for _, b in four) == [0, 1, 2, 3]
    assert len(set(grid_offsets(4, 15))) == 15
    with pytest.raises(ValueError, match="passes"):
        grid_offsets(4, 0)


def test_hide_fills_the_grid_only_and_keeps_the_input():
    _, x = _field()
    before = x.copy()
    hidden, mask = hide(x, (1, 2))
    np.testing.assert_array_equal(x, before)
    assert mask.sum() == (96 // 4) ** 2 and mask[1, 2] and not mask[0, 0]
    np.testing.assert_array_equal(hidden[~mask], x[~mask])
    assert hidden[5, 6] == pytest.approx((x[4, 6] + x[6, 6] + x[5, 5] + x[5, 7]) / 4)


def test_loss_is_true_mse_plus_noise_variance_and_ranks_like_it():
    y, x = _field()
    widths = [0.5, 1.0, 1.5, 3.0]
    true = [np.mean((ndi.gaussian_filter(x, s) - y) ** 2) for s in widths]
    judged = [j_invariant_loss(x, lambda a, s=s: ndi.gaussian_filter(a, s)) for s in widths]
    # the identity scores the noise variance twice over (it returns the hidden pixel's fill)
    assert np.argsort(judged).tolist()[0] == int(np.argmin(true))
    assert judged[-1] - 0.01 == pytest.approx(true[-1], rel=0.2)


def test_denoiser_must_keep_the_shape():
    _, x = _field()
    with pytest.raises(ValueError, match="keep the shape"):
        j_invariant_loss(x, lambda a: a[1:])
    with pytest.raises(ValueError, match="2-D plane"):
        j_invariant_loss(x[:4, :4], lambda a: a)


def test_fresh_noise_at_hidden_pixels_stops_weak_denoisers_looking_good():
    y, x = _field()
    plain = j_invariant_loss(x, lambda a: a)
    topped = j_invariant_loss(x, lambda a: a, noise_variance=lambda u: np.full(u.shape, 0.01))
    # the identity returns the hidden pixel's fill: a quarter of the noise, or all of it, again
    assert plain == pytest.approx(1.25 * 0.01, rel=0.2)
    assert topped == pytest.approx(2.0 * 0.01, rel=0.2)
    assert topped == j_invariant_loss(x, lambda a: a, seed=0,
                                      noise_variance=lambda u: np.full(u.shape, 0.01))
