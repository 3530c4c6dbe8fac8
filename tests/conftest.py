import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def hazy_small():
    """A small hazy RGB image with known transmission and airlight (uint8)."""
    from napari_ssl_restore.data import hazy_scene

    s = hazy_scene()
    return {k: (v[::6, ::6] if isinstance(v, np.ndarray) and v.ndim >= 2 else v) for k, v in s.items()}
