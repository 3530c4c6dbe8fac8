import dataclasses

import numpy as np
import pytest

import napari_ssl_restore as nsr
from napari_ssl_restore import list_methods, restore
from napari_ssl_restore.core.progress import Cancelled, Step
from napari_ssl_restore.core.registry import METHOD_MODULES, all_methods, get_method


def test_contract_names_and_registry():
    assert "dcp" in list_methods()
    assert list_methods() == list(METHOD_MODULES)
    for spec in all_methods():
        # every method: a documented frozen Params, a public function exported at top level
        assert dataclasses.is_dataclass(spec.params)
        assert spec.params.__dataclass_params__.frozen
        assert all(p.doc for p in spec.param_info)
        assert getattr(nsr, spec.function).__name__ == spec.function
        assert spec.function in nsr.__all__


def test_unknown_method():
    with pytest.raises(ValueError, match="Unknown method 'nope'.*dcp"):
        restore(np.zeros((4, 4)), "nope")


@pytest.mark.parametrize("bad,msg", [
    ({"axes": "YXZ"}, "3 letters"),
    ({"seed": -1}, "seed"),
    ({"device": "gpu"}, "Unknown device"),
])
def test_bad_run_settings(bad, msg, rng):
    with pytest.raises(ValueError, match=msg):
        restore(rng.random((8, 8)), "dcp", **bad)


def test_progress_callback_and_tqdm(rng, capsys):
    steps = []
    restore(rng.random((3, 16, 16)), "dcp", axes="TYX", progress=steps.append)
    assert steps and all(isinstance(s, Step) for s in steps)
    assert steps[-1].step == steps[-1].total
    restore(rng.random((16, 16)), "dcp", progress=True)


def test_should_stop_cancels_closed_form_method(rng):
    with pytest.raises(Cancelled):
        restore(rng.random((3, 16, 16)), "dcp", axes="TYX", should_stop=lambda: True)


def test_full_output_has_provenance(rng):
    out = restore(rng.random((16, 16)), "dcp", full_output=True, omega=0.8)
    assert set(out) == {"image", "transmission", "airlight", "provenance"}
    assert out["provenance"]["params"]["omega"] == 0.8
    assert out["provenance"]["axes"] == "YX"


def test_dask_input(rng):
    da = pytest.importorskip("dask.array")
    x = rng.random((2, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(restore(da.from_array(x), "dcp", axes="TYX"),
                                  restore(x, "dcp", axes="TYX"))


def test_spec_outputs_are_consistent():
    for spec in all_methods():
        names = [o.name for o in spec.outputs]
        assert len(set(names)) == len(names) and spec.primary.kind == "image"
        assert get_method(spec.name) is spec


# --- every method, every task/mode, with tiny settings ---------------------------------------------
from helpers import TINY, output_shape, sample, variant_id, variants  # noqa: E402


def test_every_method_has_tiny_settings():
    assert set(TINY) == set(list_methods())


@pytest.mark.parametrize("variant", variants(), ids=variant_id)
def test_every_method_runs_from_the_api(variant):
    method, settings = variant
    image, axes, extras = sample(method, settings)
    before = image.copy()
    out = restore(image, method, axes=axes, device="cpu", full_output=True,
                  **TINY[method], **settings, **extras)
    prov = out["provenance"]
    primary = out[prov["primary_output"]]
    expected = output_shape(method, settings, image, axes)
    if get_method(method).outputs[[o.name for o in get_method(method).outputs]
                                  .index(prov["primary_output"])].kind == "labels":
        expected = tuple(s for s, a in zip(expected, axes, strict=False) if a != "C")
    assert primary.shape == expected
    assert prov["method"] == method and prov["axes"] == axes
    np.testing.assert_array_equal(image, before)  # never modified in place
