"""``napari-ssl-restore demo``: every method on its bundled/synthetic samples, no network, no display."""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np


def _show(ax, image: np.ndarray, axes: str, title: str) -> None:
    """Draw the middle plane of a stack (RGB kept) on a matplotlib axis."""
    img = np.asarray(image)
    for letter in "TZ":
        if letter in axes:
            i = axes.index(letter)
            img = np.take(img, img.shape[i] // 2, axis=i)
            axes = axes.replace(letter, "")
    img = img.astype(np.float32)
    if img.ndim == 3:
        img = img / (255.0 if np.asarray(image).dtype == np.uint8 else max(float(img.max()), 1e-12))
        ax.imshow(np.clip(img, 0, 1))
    else:
        lo, hi = np.percentile(img, [0.5, 99.8])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def run_demo(output: str | Path, *, methods: Sequence[str] | None = None,
             device: str = "auto") -> Iterator[str]:
    """Run each method's demo samples; write TIFFs and ``demo.png``; yield one line per result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .api import restore
    from .core.io import write_image
    from .core.registry import get_method, list_methods

    names = list(methods) if methods else list_methods()
    specs = [get_method(n) for n in names]  # unknown names fail before any work
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in specs:
        if spec.demo is None:
            continue
        for k, sample in enumerate(spec.demo()):
            extras = {i.name: sample[i.name] for i in spec.inputs if i.name in sample}
            t0 = time.perf_counter()
            res = restore(sample["image"], spec.name, axes=sample["axes"], device=device,
                          full_output=True, **extras, **sample.get("params", {}))
            seconds = time.perf_counter() - t0
            stem = f"{spec.name}_{k}"
            write_image(out / f"{stem}_input.tif", sample["image"], axes=sample["axes"])
            write_image(out / f"{stem}_{spec.primary.name}.tif", res[spec.primary.name],
                        axes=sample["axes"], prov=res["provenance"])
            maps = [o for o in spec.outputs[1:] if o.kind in ("map", "labels", "image")
                    and o.name in res]
            for o in maps:
                write_image(out / f"{stem}_{o.name}.tif", res[o.name],
                            axes=sample["axes"].replace("C", "") if o.kind != "image"
                            else sample["axes"], prov=res["provenance"])
            note = ""
            clean = sample.get("clean")
            if clean is not None and clean.dtype == sample["image"].dtype:
                from skimage.metrics import peak_signal_noise_ratio as psnr

                rng = 255 if clean.dtype == np.uint8 else float(clean.max() - clean.min())
                note = (f", PSNR {psnr(clean, sample['image'], data_range=rng):.2f} -> "
                        f"{psnr(clean, res[spec.primary.name], data_range=rng):.2f} dB")
            rows.append((spec, sample, res, maps))
            yield (f"{spec.name}: {sample.get('name', stem)} {sample['image'].shape} in "
                   f"{seconds:.2f} s{note} -> {out / (stem + '_' + spec.primary.name + '.tif')}")
    if not rows:
        yield "no method has a demo"
        return
    ncol = 2 + max(len(r[3]) for r in rows)
    fig, axs = plt.subplots(len(rows), ncol, figsize=(3.2 * ncol, 3.0 * len(rows)), squeeze=False)
    for r, (spec, sample, res, maps) in enumerate(rows):
        _show(axs[r, 0], sample["image"], sample["axes"], f"input: {sample.get('name', '')}")
        _show(axs[r, 1], res[spec.primary.name], sample["axes"], f"{spec.name}")
        for c, o in enumerate(maps, start=2):
            _show(axs[r, c], res[o.name], sample["axes"].replace("C", "") if o.kind != "image"
                  else sample["axes"], f"{spec.name}: {o.name}")
        for c in range(2 + len(maps), ncol):
            axs[r, c].axis("off")
    fig.tight_layout()
    fig.savefig(out / "demo.png", dpi=90)
    plt.close(fig)
    yield f"figure: {out / 'demo.png'}"
