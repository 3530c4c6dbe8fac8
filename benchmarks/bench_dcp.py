"""Dark Channel Prior: quality and speed against the usual OpenCV script.

Run:  python benchmarks/bench_dcp.py [--figure docs/dcp_comparison.png]
Needs the benchmark-only extra ``opencv-python-headless`` for the baseline.

Quality: scikit-image's Middlebury motorcycle, hazed with its own disparity-derived depth at three haze
densities (known clean image, so PSNR/SSIM are real), plus agreement with the OpenCV script (mean
absolute difference of the 8-bit outputs). Speed: a 2000×2000 RGB image, median of several runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from skimage.metrics import peak_signal_noise_ratio as psnr
from skimage.metrics import structural_similarity as ssim
from skimage.transform import resize

sys.path.insert(0, str(Path(__file__).parent))
import opencv_dcp_reference as ref  # noqa: E402

from napari_ssl_restore import restore  # noqa: E402
from napari_ssl_restore.data import hazy_scene  # noqa: E402


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (thread pool, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--figure", type=Path, help="write a comparison PNG here")
    args = ap.parse_args()

    print("## Quality (motorcycle hazed with its real depth; PSNR dB / SSIM vs the clean image)\n")
    print("| haze beta | hazy input | OpenCV script | ours (default) | ours (exact guided filter) "
          "| ours vs OpenCV, mean abs diff (8-bit) |")
    print("|---|---|---|---|---|---|")
    shown = None
    for beta in (1.0, 2.0, 3.0):
        s = hazy_scene(beta=beta)
        clean, hazy = s["clean"], s["image"]
        j_ref = to_u8(ref.dehaze(hazy)[0])
        ours = restore(hazy, "dcp")
        exact = restore(hazy, "dcp", guided_subsample=1)

        def q(x):
            return f"{psnr(clean, x):.2f} / {ssim(clean, x, channel_axis=-1):.3f}"

        diff = np.abs(ours.astype(int) - j_ref.astype(int)).mean()
        print(f"| {beta:.0f} | {q(hazy)} | {q(j_ref)} | {q(ours)} | {q(exact)} | {diff:.2f} |")
        if beta == 2.0:
            shown = (hazy, j_ref, ours, clean)

    print("\n## Speed (2000×2000 RGB uint8, median of "
          f"{args.repeats} runs after a warm-up, this machine)\n")
    big = to_u8(resize(hazy_scene()["image"], (2000, 2000), order=1))
    t_ref = timed(lambda: ref.dehaze(big), args.repeats)
    t_ours = timed(lambda: restore(big, "dcp"), args.repeats)
    t_exact = timed(lambda: restore(big, "dcp", guided_subsample=1), args.repeats)
    print("| implementation | seconds | vs OpenCV script |")
    print("|---|---|---|")
    print(f"| OpenCV script (erode + argsort + boxFilter guided filter) | {t_ref:.3f} | 1.00 |")
    print(f"| ours, default (fast guided filter, s=4) | {t_ours:.3f} | {t_ours / t_ref:.2f} |")
    print(f"| ours, exact guided filter (guided_subsample=1) | {t_exact:.3f} | "
          f"{t_exact / t_ref:.2f} |")

    if args.figure and shown is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        titles = ["hazy input (beta=2)", "OpenCV DCP script", "napari-ssl-restore dcp", "ground truth"]
        fig, axs = plt.subplots(1, 4, figsize=(16, 3.3))
        for ax, img, title in zip(axs, shown, titles, strict=False):
            ax.imshow(img)
            extra = "" if title.startswith("ground") else f"\n{psnr(shown[3], img):.2f} dB"
            ax.set_title(title + extra, fontsize=10)
            ax.axis("off")
        fig.tight_layout()
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure, dpi=80)
        print(f"\nfigure: {args.figure}")


if __name__ == "__main__":
    main()
