"""On an accelerator: the methods run there and say so (skipped where torch sees none)."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import TINY, sample

from napari_ssl_restore import restore

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("method", ["dncnn", "dip", "noise2noise"])
def test_auto_runs_on_the_accelerator(method):
    settings = {"task": "denoise"} if method == "dip" else {}
    image, axes, extras = sample(method, settings)
    out = restore(image, method, axes=axes, device="auto", full_output=True,
                  **{**TINY[method], **settings}, **extras)
    assert out["provenance"]["device"].startswith(("cuda", "mps"))
    assert np.isfinite(np.asarray(out[out["provenance"]["primary_output"]], float)).all()
