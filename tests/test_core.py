"""normalize, params, progress, device and io."""
import json
import logging

import numpy as np
import pytest

from napari_ssl_restore.core import io, normalize, progress
from napari_ssl_restore.core.device import resolve_device
from napari_ssl_restore.core.params import coerce, describe, param, validate


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
def test_scaling_round_trip(dtype, rng):
    if np.dtype(dtype).kind == "f":
        data = (rng.random((8, 8)) * 7 - 2).astype(dtype)
    else:
        info = np.iinfo(dtype)
        data = rng.integers(max(info.min, -1000), min(info.max, 4000), (8, 8)).astype(dtype)
    for sc in (normalize.range_scaling(data), normalize.percentile_scaling(data)):
        unit = sc.forward(data)
        assert unit.dtype == np.float32
        back = sc.inverse(unit)
        assert back.dtype == data.dtype
        np.testing.assert_allclose(back.astype(float), data.astype(float),
                                   atol=1e-3 * max(1, np.ptp(data)))
        assert sc.inverse(unit, as_float=True).dtype == np.float32


def test_range_scaling_maps_into_unit_interval(rng):
    data = rng.integers(0, 4096, (16, 16)).astype(np.uint16)
    unit = normalize.range_scaling(data).forward(data)
    assert unit.min() >= 0 and unit.max() == pytest.approx(1.0)
    assert normalize.range_scaling(np.full((4, 4), 255, np.uint8)).scale == 255


def test_inverse_clips_integer_range():
    sc = normalize.Scaling(0.0, 255.0, np.dtype(np.uint8))
    out = sc.inverse(np.array([-0.5, 0.5, 1.5], np.float32))
    np.testing.assert_array_equal(out, [0, 128, 255])


@pytest.mark.parametrize("bad,msg", [
    (np.zeros((0, 4)), "empty"),
    (np.zeros(5), "at least 2 dimensions"),
    (np.array([[1.0, np.nan]]), "NaN"),
    (np.array([[1.0, np.inf]]), "NaN or infinite"),
    (np.zeros((3, 3), bool), "dtype bool"),
    (np.zeros((3, 3), complex), "dtype complex"),
    ("not an image", "dtype <U"),
])
def test_check_image_rejects(bad, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        normalize.check_image(bad)


def test_percentile_bounds_validated(rng):
    with pytest.raises(ValueError, match="percentiles"):
        normalize.percentile_scaling(rng.random((4, 4)), 50, 10)


def _params_cls():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class P:
        method_title = "Toy"
        n: int = param(3, "count", min=1, max=10)
        x: float = param(0.5, "fraction", min=0.0, max=1.0)
        mode: str = param("a", "mode", choices=("a", "b"))
        flag: bool = param(True, "flag")

    return P


def test_params_validate_and_coerce():
    P = _params_cls()
    validate(P())
    assert [i.name for i in describe(P)] == ["n", "x", "mode", "flag"]
    for bad, msg in [({"n": 0}, ">= 1"), ({"x": 2.0}, "<= 1.0"), ({"mode": "c"}, "one of"),
                     ({"n": 1.5}, "whole number"), ({"flag": 1}, "True or False"),
                     ({"x": float("nan")}, "finite"), ({"n": "3"}, "number")]:
        with pytest.raises((ValueError, TypeError), match=msg):
            validate(P(**bad))
    assert coerce(P, "n", "4") == 4 and coerce(P, "flag", "false") is False
    assert coerce(P, "x", "0.25") == 0.25
    with pytest.raises(ValueError, match="number"):
        coerce(P, "x", "abc")


def test_drive_progress_and_stop():
    def gen():
        for i in range(5):
            yield progress.Step(i + 1, 5, f"{i}")
        return "done"

    seen = []
    assert progress.drive(gen(), progress=seen.append) == "done"
    assert [s.step for s in seen] == [1, 2, 3, 4, 5] and seen[-1].fraction == 1.0

    token = progress.StopToken()
    token.set()
    with pytest.raises(progress.Cancelled):
        progress.drive(gen(), should_stop=token)

    def partial():
        best = None
        try:
            for i in range(100):
                best = i
                yield progress.Step(i, 100)
        except progress.StopRequested:
            return ("stopped", best)
        return ("finished", best)

    calls = iter([False, False, True])
    assert progress.drive(partial(), should_stop=lambda: next(calls)) == ("stopped", 2)


def test_device_resolution_falls_back_to_cpu(caplog):
    import torch

    assert resolve_device("cpu").type == "cpu"
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    if not torch.cuda.is_available():
        with caplog.at_level(logging.WARNING):
            assert resolve_device("cuda").type == "cpu"
        assert "falling back" in caplog.text
    with pytest.raises(ValueError, match="Unknown device"):
        resolve_device("tpu")


def test_io_round_trip_with_provenance(tmp_path, rng):
    data = rng.integers(0, 65535, (3, 8, 9)).astype(np.uint16)
    prov = io.provenance("dcp", {"omega": 0.9}, seed=1, device="cpu", axes="TYX")
    path = tmp_path / "x.tif"
    io.write_image(path, data, axes="TYX", prov=prov)
    back, axes = io.read_image(path)
    np.testing.assert_array_equal(back, data)
    assert axes == "TYX"  # a result read back keeps T as T
    rec = io.read_provenance(path)
    assert rec["method"] == "dcp" and rec["params"] == {"omega": 0.9} and rec["seed"] == 1
    assert rec["version"]
    json.dumps(rec)


def test_io_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        io.read_image(tmp_path / "missing.tif")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff at all")
    with pytest.raises(ValueError, match="cannot read it as a TIFF"):
        io.read_image(bad)


def test_atomic_paths_rename_only_when_complete(tmp_path):
    target = tmp_path / "out.tif"
    with pytest.raises(RuntimeError):
        with io.atomic_paths([target]) as (tmp,):
            (tmp_path / tmp).write_bytes(b"half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with io.atomic_paths([target]) as (tmp,):
        with open(tmp, "wb") as f:
            f.write(b"whole")
        assert not target.exists()
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]
