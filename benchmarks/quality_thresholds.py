"""The measurements behind the thresholds of :func:`napari_ssl_restore.engine.judge.residual_quality`
(``COARSE_MAX``, ``SIGNAL_MIN``): its numbers for DnCNN at its defaults, Gaussian blurs of growing
width and a 3x3 median on synthetic noisy fields, and for blurs of pure noise.

Run: ``python benchmarks/quality_thresholds.py`` (about a minute on a laptop CPU; no network).
"""
from __future__ import annotations

import time

import numpy as np
from scipy import ndimage as ndi

from napari_ssl_restore import restore
from napari_ssl_restore.data import add_noise, cells, dead_leaves, microscopy_field, noisy_cells
from napari_ssl_restore.engine.judge import residual_quality


def fields(size: int = 256) -> list[tuple[str, np.ndarray]]:
    flat = np.full((size, size), 0.5, np.float32)
    return [("noisy_cells σ0.1", noisy_cells(size=size, sigma=0.1)["image"]),
            ("cells σ0.05", add_noise(cells(size, seed=1), 0.05, seed=1)),
            ("field σ0.15", add_noise(microscopy_field(size, seed=2), 0.15, seed=2)),
            ("field Poisson-Gaussian", add_noise(microscopy_field(size, seed=3), 0.02,
                                                 poisson=30, seed=3)),
            ("dead leaves σ0.1", add_noise(dead_leaves(size, seed=4), 0.1, seed=4)),
            ("field correlated 0.7 px", add_noise(microscopy_field(size, seed=5), 0.1,
                                                  correlation=0.7, seed=5)),
            ("pure noise σ0.1", add_noise(flat, 0.1, seed=6))]


def main() -> None:
    print("| field | method | whiteness | signal_correlation | coarse_power | noise_ratio | ms | "
          "verdict |")
    print("|---|---|---|---|---|---|---|---|")
    for name, noisy in fields():
        y = np.asarray(noisy, np.float32)
        lo, hi = np.percentile(y, [0.1, 99.9])
        u = (y - lo) / (hi - lo)  # the API's percentile normalisation
        outs = {"dncnn": (restore(y, "dncnn", axes="YX", float_output=True) - lo) / (hi - lo)}
        for sigma in (0.7, 1.0, 2.0, 3.0, 4.0):
            outs[f"gaussian σ{sigma:g}"] = ndi.gaussian_filter(u, sigma)
        outs["median 3x3"] = ndi.median_filter(u, 3)
        for method, out in outs.items():
            t0 = time.perf_counter()
            q = residual_quality([u], [out])
            ms = 1000 * (time.perf_counter() - t0)
            print(f"| {name} | {method} | {q['whiteness']:.3f} | {q['signal_correlation']:+.3f} "
                  f"| {q['coarse_power']:.2f} | {q.get('noise_ratio', float('nan')):.2f} | "
                  f"{ms:.0f} | {q['verdict'].split(':')[0]} |")
    big = np.random.default_rng(0).random((512, 512)).astype(np.float32)
    t0 = time.perf_counter()
    residual_quality([big], [ndi.gaussian_filter(big, 1.0)])
    print(f"\none 512² crop: {1000 * (time.perf_counter() - t0):.0f} ms")


if __name__ == "__main__":
    main()
