"""``batch`` on a real dask.distributed LocalCluster of worker processes: files, chunks of one store,
resume, a failing input, a worker restarted mid-run, the model read once per worker, the CLI."""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import tifffile

pytest.importorskip("distributed")

from napari_ssl_restore import batch, restore  # noqa: E402
from napari_ssl_restore.batching import local_cluster  # noqa: E402
from napari_ssl_restore.cli import main  # noqa: E402

DCP = {"patch_size": 5, "guided_radius": 4}
DIP = {"max_iter": 3, "channels": 8, "depth": 2, "input_depth": 4, "skip_channels": 2,
       "warm_start": False}


@pytest.fixture(scope="module")
def client():
    c = local_cluster(workers=2, device="cpu")
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


def _images(folder, n, size=40, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(n):
        img = (rng.random((size, size)) * 3000 + 200).astype(np.uint16)
        path = os.path.join(folder, f"cell{k}.tif")
        tifffile.imwrite(path, img)
        paths.append(path)
    return paths


def _movie(path, frames=11, size=36, seed=1):
    rng = np.random.default_rng(seed)
    mov = (rng.random((frames, size, size)) * 3000 + 200).astype(np.uint16)
    tifffile.imwrite(path, mov, metadata={"axes": "TYX"})
    return mov


def test_files_match_restore_resume_and_settings_guard(client, tmp_path):
    paths = _images(tmp_path, 3)
    out = tmp_path / "out"
    summary = batch(str(tmp_path / "cell*.tif"), "dcp", out, client=client, progress=False, **DCP)
    assert [r.status for r in summary] == ["done"] * 3, summary.table()
    assert {r.worker for r in summary} <= {"0", "1"}
    for path in paths:
        stem = os.path.basename(path)[:-4]
        got = tifffile.imread(out / f"{stem}_dcp.tif")
        np.testing.assert_array_equal(got, restore(tifffile.imread(path), "dcp", axes="YX", **DCP))
    assert "3 done" in summary.table()
    again = batch(paths, "dcp", out, client=client, progress=False, **DCP)
    assert [r.status for r in again] == ["skipped"] * 3
    with pytest.raises(ValueError, match="not made by this batch's settings"):
        batch(paths, "dcp", out, client=client, progress=False, omega=0.8, **DCP)
    redo = batch(paths, "dcp", out, client=client, progress=False, overwrite=True, omega=0.8, **DCP)
    assert [r.status for r in redo] == ["done"] * 3
    assert not [f for f in os.listdir(out) if f.endswith(".partial")]


def test_failing_input_reported_others_finish_rerun_does_only_it(client, tmp_path):
    paths = _images(tmp_path, 3)
    with open(paths[1], "wb") as f:
        f.write(b"not a tiff at all")
    out = tmp_path / "out"
    summary = batch(paths, "dcp", out, client=client, progress=False, **DCP)
    status = {r.unit: r.status for r in summary}
    assert status == {"cell0.tif": "done", "cell1.tif": "failed", "cell2.tif": "done"}
    assert "cell1.tif" in summary.failed[0].error and "TIFF" in summary.failed[0].error
    assert not summary.ok and "1 failed" in summary.table()
    assert not os.path.exists(out / "cell1_dcp.tif")
    _images(tmp_path, 2, seed=0)  # the broken file is replaced
    rerun = batch(paths, "dcp", out, client=client, progress=False, **DCP)
    assert {r.unit: r.status for r in rerun} == {"cell0.tif": "skipped", "cell1.tif": "done",
                                                  "cell2.tif": "skipped"}


def test_chunks_of_one_store_equal_single_run_and_resume(client, tmp_path):
    import zarr

    mov = _movie(tmp_path / "movie.tif")
    out = tmp_path / "out"
    summary = batch(tmp_path / "movie.tif", "dcp", out, client=client, chunk_planes=4,
                    progress=False, **DCP)
    assert [r.unit for r in summary] == ["movie.tif [T 0:4]", "movie.tif [T 4:8]",
                                         "movie.tif [T 8:11]"]
    store = zarr.open_group(out / "movie_dcp.ome.zarr", mode="r")
    single = restore(mov, "dcp", axes="TYX", **DCP)  # the shared airlight of the whole movie
    np.testing.assert_array_equal(store["0"][:], single)
    assert store.attrs["napari_ssl_restore_batch"]["complete"]
    assert not os.path.exists(out / ".movie_dcp.ome.zarr.chunks")
    again = batch(tmp_path / "movie.tif", "dcp", out, client=client, chunk_planes=4,
                  progress=False, **DCP)
    assert {r.status for r in again} == {"skipped"}


def test_network_chunks_equal_unchunked_run_and_linked_settings_refused(client, tmp_path):
    import zarr

    _movie(tmp_path / "movie.tif", frames=5, size=24)
    whole = batch(tmp_path / "movie.tif", "dip", tmp_path / "whole", client=client,
                  progress=False, **DIP)
    chunked = batch(tmp_path / "movie.tif", "dip", tmp_path / "chunked", client=client,
                    chunk_planes=2, progress=False, **DIP)
    assert whole.ok and chunked.ok and len(chunked) == 3
    a = tifffile.imread(tmp_path / "whole" / "movie_dip.tif")
    b = zarr.open_group(tmp_path / "chunked" / "movie_dip.ome.zarr", mode="r")["0"][:]
    np.testing.assert_array_equal(a, b)  # per-plane seeds by the plane's index in the stack
    with pytest.raises(ValueError, match="warm_start"):
        batch(tmp_path / "movie.tif", "dip", tmp_path / "x", client=client, chunk_planes=2,
              **dict(DIP, warm_start=True))
    with pytest.raises(ValueError, match="fine-tunes"):
        batch(tmp_path / "movie.tif", "frame2frame", tmp_path / "x", client=client,
              chunk_planes=2)
    with pytest.raises(ValueError, match="second acquisition|target"):
        batch(tmp_path / "movie.tif", "noise2noise", tmp_path / "x", client=client,
              target=tmp_path / "movie.tif")


def test_model_sent_once_and_read_once_per_worker(client, tmp_path):
    from napari_ssl_restore.core.models import WEIGHTS_DIR

    model = glob.glob(os.path.join(WEIGHTS_DIR, "*.pt"))[0]
    paths = _images(tmp_path, 6, size=32)
    summary = batch(paths, "dncnn", tmp_path / "out", client=client, progress=False, model=model,
                    tile_size=32, tile_overlap=8)
    assert summary.ok, summary.table()
    reads: dict[str, set] = {}
    for r in summary:
        reads.setdefault(r.worker, set()).add(r.model_reads)
    # a worker's count of model reads does not grow with the units it runs
    assert all(len(v) == 1 for v in reads.values()), reads
    ref = restore(tifffile.imread(paths[0]), "dncnn", axes="YX", model=model, device="cpu",
                  tile_size=32, tile_overlap=8)
    got = tifffile.imread(tmp_path / "out" / "cell0_dncnn.tif")
    assert np.abs(got.astype(float) - ref.astype(float)).max() <= 1  # 1 vs 2 torch threads


def test_worker_restarted_mid_run_batch_still_completes(client, tmp_path):
    paths = _images(tmp_path, 6, size=32)
    restarted = []

    def progress(result, done, total):
        if not restarted:  # the first unit is in: restart a worker while others run
            restarted.append(list(client.scheduler_info()["workers"])[0])
            client.restart_workers(restarted[:1])

    summary = batch(paths, "dip", tmp_path / "out", client=client, progress=progress,
                    **dict(DIP, max_iter=150))
    assert restarted
    assert summary.ok, summary.table()
    assert sorted(os.listdir(tmp_path / "out")) == [f"cell{k}_dip.tif" for k in range(6)]


def test_cli_batch(client, tmp_path, capsys):
    paths = _images(tmp_path, 2)
    address = client.scheduler.address
    rc = main(["batch", "dcp", *paths, "-o", str(tmp_path / "out"), "--scheduler", address,
               "--patch-size", "5"])
    out = capsys.readouterr().out
    assert rc == 0 and "2 done" in out and "cell0.tif" in out
    with open(paths[0], "wb") as f:
        f.write(b"broken")
    rc = main(["batch", "dcp", paths[0], "-o", str(tmp_path / "out2"), "--scheduler", address])
    captured = capsys.readouterr()
    assert rc == 1 and "failed" in captured.out and "error: cell0.tif" in captured.err
    rc = main(["batch", "dcp", str(tmp_path / "none*.tif"), "-o", str(tmp_path / "o3")])
    assert rc == 2 and "no file matches" in capsys.readouterr().err


def test_stop_cancels_the_rest_and_a_rerun_finishes_them(client, tmp_path):
    paths = _images(tmp_path, 6, size=32)
    ended = []
    summary = batch(paths, "dip", tmp_path / "out", client=client,
                    progress=lambda res, done, total: ended.append(res.unit),
                    should_stop=lambda: bool(ended), **dict(DIP, max_iter=60))
    status = [r.status for r in summary]
    assert "cancelled" in status and "done" in status and not summary.ok
    assert "cancelled" in summary.table()
    again = batch(paths, "dip", tmp_path / "out", client=client, progress=False,
                  **dict(DIP, max_iter=60))
    assert again.ok
    # a cancelled unit already running may have finished
    for before, now in zip(status, again, strict=True):
        assert now.status == "skipped" if before == "done" else now.status in ("done", "skipped")
    assert any(r.status == "done" for r in again)


@pytest.mark.napari
def test_widget_sends_the_layers_planes_to_a_scheduler(client, make_napari_viewer, qtbot):
    """The DCP dock, opened from the Plugins menu path, with a scheduler address: the planes run
    as tasks there (3 of 4, 4 and 3 frames) and come back as one layer equal to a local run."""
    pytest.importorskip("napari")
    from test_napari import open_dock, run_and_wait

    from napari_ssl_restore.core.io import PROVENANCE_KEY

    rng = np.random.default_rng(3)
    mov = (rng.random((11, 36, 36)) * 3000 + 200).astype(np.uint16)
    viewer = make_napari_viewer()
    viewer.add_image(mov, name="movie")
    _dock, widget = open_dock(viewer, "dcp")
    widget.axes.value = "TYX"  # a time-lapse (3-D grey guesses ZYX for an image method)
    widget.params.patch_size.value = 5
    widget.params.guided_radius.value = 4
    widget.scheduler.value = client.scheduler.address
    widget.chunk_planes.value = 4
    run_and_wait(qtbot, widget)
    assert widget.status.value == "done", widget.status.value
    layer = viewer.layers["movie dcp"]
    np.testing.assert_array_equal(np.asarray(layer.data), restore(mov, "dcp", axes="TYX", **DCP))
    assert layer.metadata[PROVENANCE_KEY]["tasks"] == 3
