"""Batch on dask.distributed: throughput against workers, bit-identity of chunks, overhead per unit.

    python benchmarks/bench_batch.py [--files 16] [--size 512] [--frames 200] [--workdir DIR]

- ``scaling``: ``dncnn`` over ``--files`` uint16 images of ``--size``² through a LocalCluster of
  1 worker x 1 thread, 1 x all cores, and N x 1 thread for N up to the cores; wall time of the batch
  with the cluster already started and warmed (one unit each), so it is the work, not start-up.
- ``identical``: a ``--frames``-frame OME-Zarr time-lapse restored by ``batch`` in 8 chunks against
  ``napari-ssl-restore run`` in one process, both with one torch thread: ``dcp`` (shared airlight)
  and ``dncnn``; prints whether the arrays are equal bit for bit.
- ``overhead``: 64 units of a 16² image (``dcp``, microseconds of work each): (wall x workers -
  the units' own seconds) / units = what dask and the unit's set-up add per unit.
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


def _field(rng, shape):
    """A smooth fluorescence-like field with Poisson-like noise, uint16."""
    from scipy import ndimage as ndi

    base = ndi.gaussian_filter(rng.random(shape), 4)
    base = (base - base.min()) / (np.ptp(base) + 1e-9)
    clean = 200 + 3000 * base ** 2
    return np.clip(clean + rng.normal(0, 1, shape) * np.sqrt(clean) * 3, 0, 65535).astype(np.uint16)


def make_files(folder: Path, n: int, size: int) -> list[str]:
    import tifffile

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        path = folder / f"img{k:03d}.tif"
        if not path.exists():
            tifffile.imwrite(path, _field(rng, (size, size)))
        paths.append(str(path))
    return paths


def run_scaling(work: Path, n_files: int, size: int) -> None:
    from distributed import Client, LocalCluster

    from napari_ssl_restore import batch
    from napari_ssl_restore.batching import _threads_plugin

    paths = make_files(work / "files", n_files, size)
    cores = os.cpu_count() or 1
    configs = [(1, 1), (1, cores)] + [(n, 1) for n in range(2, cores + 1)]
    base = None
    print(f"dncnn over {n_files} files of {size}², LocalCluster already warm:")
    for workers, threads in configs:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=":0", silence_logs=40) as cluster, \
                Client(cluster) as client:
            client.register_plugin(_threads_plugin(threads, 0))
            warm = work / f"warm-{workers}x{threads}"
            batch(paths[:workers], "dncnn", warm, client=client, device="cpu", progress=False,
                  overwrite=True)
            out = work / f"out-{workers}x{threads}"
            t0 = time.perf_counter()
            summary = batch(paths, "dncnn", out, client=client, device="cpu", progress=False,
                            overwrite=True)
            wall = time.perf_counter() - t0
        assert summary.ok, summary.table()
        base = base or wall
        print(f"  {workers} worker(s) x {threads} thread(s): {wall:6.1f} s, "
              f"{n_files / wall:.2f} files/s, {base / wall:.2f}x of 1 x 1")


def run_identical(work: Path, frames: int, size: int) -> None:
    import zarr

    from napari_ssl_restore import batch
    from napari_ssl_restore.batching import local_cluster
    from napari_ssl_restore.core.io import create_zarr

    src = work / f"movie_{frames}x{size}.ome.zarr"
    if not src.exists():
        rng = np.random.default_rng(1)
        arr = create_zarr(str(src), (frames, size, size), np.uint16, "TYX", ome=True)
        for t in range(frames):
            arr[t] = _field(rng, (size, size))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    client = local_cluster(workers=os.cpu_count() or 1, device="cpu")  # 1 thread each on 2 cores
    try:
        for method in ("dcp", "dncnn"):
            single = work / f"single_{method}.ome.zarr"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "napari_ssl_restore.cli", "run", method,
                            str(src), "-o", str(single), "--overwrite", "--device", "cpu"],
                           check=True, env=env, capture_output=True)
            t_single = time.perf_counter() - t0
            t0 = time.perf_counter()
            summary = batch(str(src), method, work / f"chunks_{method}", client=client,
                            chunk_planes=-(-frames // 8), device="cpu", progress=False,
                            overwrite=True)
            t_batch = time.perf_counter() - t0
            assert summary.ok, summary.table()
            a = zarr.open_group(str(single), mode="r")["0"][:]
            b = zarr.open_group(summary[0].output, mode="r")["0"][:]
            print(f"{method}: {frames} x {size}² in {len(summary)} chunks: bit-identical to one "
                  f"process: {np.array_equal(a, b)} (max |diff| {np.abs(a.astype(float) - b).max()}); "
                  f"one process {t_single:.1f} s (start-up included), batch {t_batch:.1f} s")
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()


def run_overhead(work: Path) -> None:
    from napari_ssl_restore import batch
    from napari_ssl_restore.batching import local_cluster

    paths = make_files(work / "tiny", 64, 16)
    workers = os.cpu_count() or 1
    client = local_cluster(workers=workers, device="cpu")
    try:
        batch(paths[:workers], "dcp", work / "tiny-warm", client=client, progress=False,
              overwrite=True)
        t0 = time.perf_counter()
        summary = batch(paths, "dcp", work / "tiny-out", client=client, progress=False,
                        overwrite=True)
        wall = time.perf_counter() - t0
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    own = sum(r.seconds for r in summary)
    per = (wall * workers - own) / len(summary)
    print(f"overhead: {len(summary)} units on {workers} workers in {wall:.2f} s; the units' own "
          f"work {own:.2f} s; dask + set-up per unit {per * 1000:.0f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="scaling,identical,overhead")
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--workdir", default="")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_batch-"))
    work.mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")
    t0 = time.time()
    if "scaling" in parts:
        run_scaling(work, args.files, args.size)
    if "identical" in parts:
        run_identical(work, args.frames, args.size)
    if "overhead" in parts:
        run_overhead(work)
    print(f"({time.time() - t0:.0f} s; data in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
