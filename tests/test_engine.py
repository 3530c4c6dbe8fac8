"""The engine: lazy planes in and out, the batched predictor, the training loop, bounded memory."""
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_ssl_restore import restore
from napari_ssl_restore.core.normalize import range_scaling
from napari_ssl_restore.engine import planes as P

torch = pytest.importorskip("torch")


# --- the plane driver ------------------------------------------------------------------------------

@pytest.mark.parametrize("axes,shape", [("YX", (5, 6)), ("XY", (6, 5)), ("TYX", (3, 5, 6)),
                                        ("YXT", (5, 6, 3)), ("CYX", (2, 5, 6)),
                                        ("TZYXC", (2, 3, 5, 6, 2)), ("ZCYX", (3, 2, 5, 6)),
                                        ("XTY", (6, 3, 5))])
def test_planes_round_trip_in_any_axis_order(axes, shape, rng):
    data = rng.integers(0, 4000, shape).astype(np.uint16)
    source = P.Source(data, axes)
    assert source.n == int(np.prod([s for a, s in zip(axes, shape, strict=False) if a in "TZ"]))
    assert source.shape[-3:] == (shape[axes.index("Y")], shape[axes.index("X")],
                                 shape[axes.index("C")] if "C" in axes else 1)
    scaling = range_scaling(data)
    planes = P.Planes(source, scaling)
    out = P.Outputs(source, scaling, [P.OutputSpec("image", "image"), P.OutputSpec("t", "map")])
    for i in range(len(planes)):
        out["image"][i] = planes[i]
        out["t"][i] = planes[i][..., 0]
    res = out.results()
    np.testing.assert_array_equal(res["image"], data)  # the caller's order and dtype, exactly
    assert res["t"].dtype == np.float32 and res["t"].ndim == data.ndim - ("C" in axes)


def test_unwritten_planes_are_filled_in_one_place(rng):
    data = rng.random((4, 8, 8)).astype(np.float32)
    source = P.Source(data, "TYX")
    scaling = range_scaling(data)
    planes = P.Planes(source, scaling)
    out = P.Outputs(source, scaling, [P.OutputSpec("image", "image"), P.OutputSpec("m", "map"),
                                      P.OutputSpec("big", "image")])
    out["image"][0] = np.zeros((8, 8, 1), np.float32)
    out["m"][0] = np.ones((8, 8), np.float32)
    out["big"][0] = np.zeros((16, 16, 1), np.float32)  # super-resolved
    out.finish(planes)
    res = out.results()
    np.testing.assert_allclose(res["image"][1:], data[1:], atol=1e-6)  # the input
    assert not res["m"][1:].any()  # maps: zeros
    assert res["big"].shape == (4, 16, 16)
    assert np.abs(res["big"][1:, ::2, ::2] - data[1:]).mean() < 0.15  # the input, resized


def test_scaling_comes_from_a_bounded_sample(rng):
    data = rng.integers(0, 1000, (40, 8, 8)).astype(np.uint16)
    data[20] = 60000  # a plane the sample does not read
    source = P.Source(data, "TYX")
    assert len(source.sample_indices()) == P.SAMPLE_PLANES and 20 not in source.sample_indices()
    assert P.scaling_for(source, "range").scale < 1000
    small = P.Source(data[:10], "TYX")
    assert small.sample_indices() == list(range(10))  # short stacks are read whole: exact


@pytest.mark.parametrize("kind", ["dask", "zarr", "tif", "ome.zarr"])
def test_lazy_inputs_give_the_in_memory_result(kind, tmp_path, rng):
    import dask.array as da
    import zarr

    from napari_ssl_restore.core.io import create_zarr

    data = (rng.random((5, 24, 20)) * 3000).astype(np.uint16)
    expected = restore(data, "dcp", axes="TYX", patch_size=5)
    if kind == "dask":
        lazy = da.from_array(data, chunks=(2, 24, 20))
    elif kind == "zarr":
        lazy = zarr.create_array(str(tmp_path / "in.zarr"), shape=data.shape, chunks=(1, 24, 20),
                                 dtype=data.dtype)
        lazy[:] = data
    elif kind == "tif":
        lazy = str(tmp_path / "in.tif")
        tifffile.imwrite(lazy, data, imagej=True, metadata={"axes": "TYX"})
    else:
        lazy = str(tmp_path / "in.ome.zarr")
        create_zarr(lazy, data.shape, data.dtype, "TYX", ome=True)[:] = data
    out = restore(lazy, "dcp", axes=None if kind in ("tif", "ome.zarr") else "TYX", patch_size=5)
    assert type(out).__module__.startswith("dask")  # backed by the written store
    np.testing.assert_array_equal(np.asarray(out), expected)
    np.testing.assert_array_equal(np.asarray(P.open_array(lazy)[0]), data)  # input untouched


@pytest.mark.parametrize("method,kw", [("dncnn", {}), ("dip", {"max_iter": 3, "channels": 8,
                                                                 "depth": 2, "input_depth": 4})])
def test_network_methods_stream_a_zarr_stack(method, kw, tmp_path, rng):
    import zarr

    data = (rng.random((3, 32, 32)) * 3000).astype(np.uint16)
    arr = zarr.create_array(str(tmp_path / "in.zarr"), shape=data.shape, chunks=(1, 32, 32),
                            dtype=data.dtype)
    arr[:] = data
    out = restore(arr, method, axes="TYX" if method == "dncnn" else "ZYX", device="cpu", **kw)
    expected = restore(data, method, axes="TYX" if method == "dncnn" else "ZYX", device="cpu",
                       **kw)
    np.testing.assert_array_equal(np.asarray(out), expected)


def test_out_folder(tmp_path, rng):
    data = rng.random((3, 16, 16)).astype(np.float32)
    res = restore(data, "dcp", axes="TYX", out=tmp_path / "res", full_output=True)
    assert (tmp_path / "res" / "image.zarr").is_dir() and (tmp_path / "res" /
                                                           "transmission.zarr").is_dir()
    np.testing.assert_allclose(np.asarray(res["image"]), restore(data, "dcp", axes="TYX"))
    with pytest.raises(ValueError, match="not empty"):
        restore(data, "dcp", axes="TYX", out=tmp_path / "res")


def _peak_rss_mib(args) -> float:
    """Peak resident memory of a command, in MiB (through a wrapper that waits for it)."""
    wrapper = ("import resource, subprocess, sys\n"
               "r = subprocess.run(sys.argv[1:])\n"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
               "sys.exit(r.returncode)\n")
    res = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return int(res.stdout.strip().splitlines()[-1]) / 1024


def _movie(path, frames: int, size: int) -> None:
    frame = (np.random.default_rng(0).random((size, size)) * 4000).astype(np.uint16)
    with tifffile.TiffWriter(path, imagej=True) as tif:
        tif.write(np.broadcast_to(frame, (frames, size, size)), metadata={"axes": "TYX"},
                  contiguous=True)


@pytest.mark.slow
def test_memory_does_not_grow_with_the_number_of_frames(tmp_path):
    """A time-lapse streams from disk to disk: 64 frames take no more memory than 8 (DCP with
    one airlight for the whole movie, from the CLI)."""
    peaks = {}
    for n in (8, 64):
        _movie(tmp_path / f"movie{n}.tif", n, 512)
        peaks[n] = _peak_rss_mib([sys.executable, "-m", "napari_ssl_restore.cli", "run", "dcp",
                                  str(tmp_path / f"movie{n}.tif"), "-o",
                                  str(tmp_path / f"out{n}.tif")])
    assert tifffile.imread(tmp_path / "out64.tif").shape == (64, 512, 512)
    stack_float32 = 64 * 512 * 512 * 4 / 2**20  # what holding the movie as float32 would take
    assert peaks[64] - peaks[8] < 0.25 * stack_float32, peaks


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS semantics: Linux")
def test_a_stack_larger_than_the_memory_it_is_given(tmp_path):
    """96 frames of 1024² under a 1 GB address-space cap: holding the stack as float32 with one
    result, as an in-memory run does, does not fit; the streamed CLI run does."""
    import resource

    cap = 1000 * 2**20

    def capped():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    src = tmp_path / "movie.tif"
    _movie(src, 96, 1024)
    in_memory = ("import numpy as np, tifffile, sys\n"
                 "a = tifffile.imread(sys.argv[1]).astype(np.float32)\n"
                 "b = np.sqrt(a)\n"
                 "c = a + b\n")  # the stack, a working copy and a result: 3 x 384 MB
    res = subprocess.run([sys.executable, "-c", in_memory, str(src)], capture_output=True,
                         text=True, preexec_fn=capped)
    assert res.returncode != 0 and "MemoryError" in res.stderr  # the cap is real
    res = subprocess.run([sys.executable, "-m", "napari_ssl_restore.cli", "run", "dcp", str(src),
                          "-o", str(tmp_path / "out.ome.zarr")], capture_output=True, text=True,
                         preexec_fn=capped)
    assert res.returncode == 0, res.stderr[-2000:]
    out, axes = P.open_array(str(tmp_path / "out.ome.zarr"))
    assert out.shape == (96, 1024, 1024) and axes == "TYX" and np.asarray(out[95]).any()


# --- the batched predictor ------------------------------------------------------------------------

class Pointwise(torch.nn.Module):
    """A "network" without spatial context (and with a conv, for the memory estimate): tiling
    must be exact for it."""

    def __init__(self, scale=1):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1, bias=False)
        torch.nn.init.ones_(self.conv.weight)
        self.scale = scale

    def forward(self, x):
        y = torch.sqrt(self.conv(x).clamp_min(0)) * 2 + 1
        return torch.nn.functional.interpolate(y, scale_factor=self.scale) if self.scale > 1 else y


@pytest.mark.parametrize("scale", [1, 2])
@pytest.mark.parametrize("shape,tile,overlap", [((50, 70), 16, 4), ((13, 9), 32, 8),
                                                ((64, 64), 24, 0), ((100, 37), 40, 8)])
def test_tiled_batched_prediction_is_exact(shape, tile, overlap, scale, rng):
    from napari_ssl_restore.engine.predict import Predictor

    planes = rng.random((3,) + shape + (1,)).astype(np.float32)
    net = Pointwise(scale)
    out = Predictor(net, "cpu", tile=tile, overlap=overlap, scale=scale)(planes)
    expected = net(torch.from_numpy(planes).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach()
    expected = expected.numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_tile_plan_covers_with_least_waste():
    from napari_ssl_restore.engine.predict import tile_plan

    size, starts = tile_plan(2048, 1100, 32)
    assert size * len(starts) < 1.1 * 2048 and starts[0] == 0 and starts[-1] + size == 2048
    assert all(b - a <= size - 32 for a, b in zip(starts, starts[1:], strict=False))  # overlap kept
    assert tile_plan(300, 512, 32) == (300, [0])


def test_out_of_memory_halves_the_batch_then_the_tile(rng):
    from napari_ssl_restore.engine.predict import Predictor

    class Fussy(Pointwise):
        def forward(self, x):
            if x.shape[0] * x.shape[-1] * x.shape[-2] > 64 * 64:  # "device memory"
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return super().forward(x)

    planes = rng.random((2, 150, 150, 1)).astype(np.float32)
    p = Predictor(Fussy(), "cpu", tile=150, overlap=8)
    out = p(planes)
    assert p.tile < 150  # the batch went to one tile, then the tile shrank
    expected = Pointwise()(torch.from_numpy(planes).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-5)


# --- the training loop -----------------------------------------------------------------------------

def test_loop_reports_finishes_at_fixed_checks_and_stops():
    from napari_ssl_restore.core.progress import StopRequested
    from napari_ssl_restore.engine.train import optimise

    w = torch.nn.Parameter(torch.tensor([3.0]))
    opt = torch.optim.SGD([w], lr=0.1)
    asked = []

    def finished(it):
        asked.append(it)
        return it >= 30

    gen = optimise(lambda it: (w ** 2).sum(), opt, 100, finished=finished, check_every=25,
                   lr_factor=lambda it: 0.5)
    steps = list(gen)
    assert asked == [25, 50] and steps[-1].step == 50  # asked at fixed steps, whatever the time
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert steps[0].step == 1 and "loss" in steps[0].metrics  # the first step always reports

    gen = optimise(lambda it: (w ** 2).sum(), opt, 100)
    next(gen)
    with pytest.raises(StopIteration) as done:
        gen.throw(StopRequested())
    assert done.value.value.stopped and done.value.value.steps == 1
