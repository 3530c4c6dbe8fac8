"""Scale benchmark: peak memory and speed of the engine on time-lapses larger than a user's RAM.

Run:  python benchmarks/bench_scale.py [--parts rss,identical,throughput,train] [--workdir DIR]
                                      [--baseline-src OLD/src] [--quick]
                                      [--methods dcp,dncnn] [--codes engine]

- ``rss``: synthetic uint16 time-lapses written to disk (TIFF and OME-Zarr), restored from the CLI in
  a child process whose peak resident memory (``ru_maxrss``) and wall time are measured:
  ``dcp`` at 2048² × 50 and × 200 frames (TIFF and OME-Zarr), ``dncnn`` at 2048² × 4 and × 8 frames
  and at 512² × 50 and × 200 frames, Frame2Frame and Restore-from-Restored offline (1 epoch) at
  512² × 50 and × 200 frames with the training memory set to 64 MiB so that it binds at that size.
  With ``--baseline-src`` the same runs (TIFF) use the code at that path (an older checkout) too.
- ``identical``: a small stack through the CLI from disk equals the in-memory API result.
- ``throughput``: ``dncnn`` frames/s on 2048² frames, this code vs ``--baseline-src``.
- ``train``: Noise2Noise training time per step (300 steps, 64² patches, batch 8), this code vs
  ``--baseline-src``.

Prints Markdown tables. The full run takes about an hour on 2 CPU cores; ``--quick`` shrinks
everything (a smoke test of the benchmark itself).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WRAPPER = ("import resource, subprocess, sys, time\n"
           "t = time.perf_counter()\n"
           "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
           "dt = time.perf_counter() - t\n"
           "sys.stderr.write(r.stderr[-3000:])\n"
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, dt, r.returncode)\n")


def measure(argv: list[str], env: dict | None = None) -> tuple[float, float]:
    """Peak RSS (MiB) and wall seconds of a command."""
    res = subprocess.run([sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True,
                         env=env)
    rss, seconds, code = res.stdout.split()
    if int(code) != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}... failed:\n{res.stderr}")
    return int(rss) / 1024, float(seconds)


def cli(src: str | None = None) -> tuple[list[str], dict]:
    """The command line running napari-ssl-restore's CLI, from ``src`` when given."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    return [sys.executable, "-m", "napari_ssl_restore.cli"], env


def frame_maker(size: int, seed: int = 0):
    """Frames of a drifting fluorescence-like field with Poisson-Gaussian-like noise (uint16)."""
    from napari_ssl_restore.data import cells

    rng = np.random.default_rng(seed)
    tile = cells(min(size, 512), seed=seed)
    base = np.tile(tile, (size // tile.shape[0] + 1, size // tile.shape[1] + 1))
    base = base[:size + 64, :size + 64]

    def frame(t: int) -> np.ndarray:
        dy, dx = (t * 3) % 64, (t * 2) % 64
        clean = base[dy:dy + size, dx:dx + size] * 3000 + 200
        noisy = clean + rng.normal(0, 1, clean.shape) * np.sqrt(clean) * 2
        return np.clip(noisy, 0, 65535).astype(np.uint16)

    return frame


def write_tif(path: Path, frames: int, size: int) -> None:
    import tifffile

    make = frame_maker(size)
    tifffile.imwrite(path, (make(t) for t in range(frames)), shape=(frames, size, size),
                     dtype=np.uint16, imagej=True, metadata={"axes": "TYX"})


def write_zarr(path: Path, frames: int, size: int) -> None:
    from napari_ssl_restore.core.io import create_zarr

    make = frame_maker(size)
    arr = create_zarr(str(path), (frames, size, size), np.uint16, "TYX", ome=True)
    for t in range(frames):
        arr[t] = make(t)


def dataset(work: Path, frames: int, size: int, kind: str) -> Path:
    path = work / f"movie_{frames}x{size}.{'tif' if kind == 'tif' else 'ome.zarr'}"
    if not path.exists():
        (write_tif if kind == "tif" else write_zarr)(path, frames, size)
    return path


def run_rss(work: Path, baseline: str | None, quick: bool, methods=None, codes=None) -> None:
    big, small = (256, 128) if quick else (2048, 512)
    counts = (4, 8) if quick else (50, 200)
    few = (2, 4) if quick else (4, 8)
    rows = []
    budget = ("import sys, napari_ssl_restore.engine.train as T; T.TRAIN_BYTES = 64 * 2**20; "
              "from napari_ssl_restore import cli; sys.exit(cli.main(sys.argv[1:]))")
    jobs = [("dcp", big, n, kind, []) for kind in ("tif", "ome.zarr") for n in counts]
    jobs += [("dncnn", big, n, "tif", []) for n in few]
    jobs += [("dncnn", small, n, "tif", []) for n in counts]
    jobs += [(m, small, n, "tif", ["--mode", "offline", "--epochs", "1"])
             for m in ("frame2frame", "restore-from-restored") for n in counts]
    for method, size, n, kind, extra in jobs:
        if methods and method not in methods:
            continue
        src = dataset(work, n, size, kind)
        for label, code in (("engine", None), ("before", baseline)):
            if label == "before" and (code is None or kind != "tif"):
                continue
            if codes and label not in codes:
                continue
            out = work / f"out_{method}_{n}_{size}_{label}.tif"
            if out.exists():
                out.unlink()
            base, env = cli(code)
            if method in ("frame2frame", "restore-from-restored") and label == "engine":
                base = [sys.executable, "-c", budget]
            argv = base + ["run", method, str(src), "-o", str(out), "--axes", "TYX", *extra]
            try:
                rss, seconds = measure(argv, env)
            except RuntimeError as exc:
                print(f"{method} {n}x{size}² {label}: failed ({str(exc).splitlines()[-1]})")
                continue
            gib = n * size * size * 2 / 2**30
            rows.append((method, f"{n} × {size}²", kind, f"{gib:.2f}", label, f"{rss:.0f}",
                         f"{seconds:.0f}", f"{seconds / n:.2f}"))
            print(" | ".join(rows[-1]), flush=True)
            out.unlink(missing_ok=True)
    print("\n| method | frames | input | input GiB | code | peak RSS (MiB) | s | s/frame |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def run_identical(work: Path) -> None:
    import tifffile

    from napari_ssl_restore import restore

    src = dataset(work, 8, 256, "tif")
    data = tifffile.imread(src)
    base, env = cli()
    for method in ("dcp", "dncnn"):
        out = work / f"same_{method}.tif"
        out.unlink(missing_ok=True)
        subprocess.run(base + ["run", method, str(src), "-o", str(out)], check=True, env=env)
        same = np.array_equal(tifffile.imread(out), restore(data, method, axes="TYX"))
        print(f"{method}: CLI from disk {'==' if same else '!='} in-memory API on 8 x 256²")


def run_throughput(work: Path, baseline: str | None, quick: bool) -> None:
    size, n = (512, 2) if quick else (2048, 4)
    src = dataset(work, n, size, "tif")
    for label, code in (("engine", None), ("before", baseline)):
        if code is None and label == "before":
            continue
        out = work / f"thr_{label}.tif"
        out.unlink(missing_ok=True)
        base, env = cli(code)
        _, seconds = measure(base + ["run", "dncnn", str(src), "-o", str(out), "--axes", "TYX"],
                             env)
        print(f"dncnn {n} x {size}² {label}: {seconds:.1f} s ({n / seconds:.3f} frames/s, "
              "including start-up)")


TRAIN = """
import sys, time, numpy as np
from napari_ssl_restore import restore
from napari_ssl_restore.data import noisy_pair
s = noisy_pair(size=128, sigma=0.15)
kw = dict(target=s["target"], patch_size=64, batch_size=8, device="cpu", seed=0)
restore(s["image"], "noise2noise", steps=10, **kw)  # warm-up (imports, first allocations)
t = time.perf_counter(); restore(s["image"], "noise2noise", steps=310, **kw); a = time.perf_counter() - t
t = time.perf_counter(); restore(s["image"], "noise2noise", steps=10, **kw); b = time.perf_counter() - t
print((a - b) / 300 * 1000)
"""


def run_train(baseline: str | None) -> None:
    for label, code in (("engine", None), ("before", baseline)):
        if code is None and label == "before":
            continue
        _, env = cli(code)
        res = subprocess.run([sys.executable, "-c", TRAIN], capture_output=True, text=True,
                             env=env, check=True)
        print(f"Noise2Noise training step ({label}): {float(res.stdout.split()[-1]):.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="rss,identical,throughput,train")
    ap.add_argument("--workdir", default="")
    ap.add_argument("--baseline-src", default="", help="src/ folder of an older checkout")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--methods", default="", help="rss: only these methods (comma-separated)")
    ap.add_argument("--codes", default="", help="rss: only 'engine' or 'before'")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_scale-"))
    work.mkdir(parents=True, exist_ok=True)
    baseline = args.baseline_src or None
    parts = args.parts.split(",")
    t0 = time.time()
    if "identical" in parts:
        run_identical(work)
    if "throughput" in parts:
        run_throughput(work, baseline, args.quick)
    if "train" in parts:
        run_train(baseline)
    if "rss" in parts:
        run_rss(work, baseline, args.quick, [m for m in args.methods.split(",") if m],
                [c for c in args.codes.split(",") if c])
    print(f"\n({time.time() - t0:.0f} s; data in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
