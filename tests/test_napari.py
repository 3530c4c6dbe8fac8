"""Widgets in a real napari viewer (needs a display: run under xvfb-run)."""
import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari_ssl_restore._napari import widgets as W  # noqa: E402
from napari_ssl_restore.core.io import PROVENANCE_KEY  # noqa: E402
from napari_ssl_restore.core.registry import list_methods  # noqa: E402


@pytest.mark.parametrize("method", list_methods())
def test_every_method_has_a_widget_factory(method, make_napari_viewer):
    viewer = make_napari_viewer()
    factory = getattr(W, f"make_{method.replace('-', '_')}_widget")
    widget = factory(viewer)
    names = [p.name for p in widget.spec.param_info]
    assert [w.name for w in widget.params] == names
    assert all(w.tooltip for w in widget.params)


def test_dcp_widget_adds_layers_with_scale_and_provenance(make_napari_viewer, hazy_small):
    viewer = make_napari_viewer()
    src = viewer.add_image(hazy_small["image"], name="hazy", rgb=True, scale=(0.5, 0.5),
                           translate=(3, 4))
    before = src.data.copy()
    widget = W.make_dcp_widget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.image.value is src
    assert widget.axes.value == "YXC"
    widget.params.patch_size.value = 7
    widget.run(sync=True)
    out = viewer.layers["hazy dcp"]
    assert out.data.shape == src.data.shape and out.data.dtype == np.uint8
    np.testing.assert_allclose(out.scale, src.scale)
    np.testing.assert_allclose(out.translate, src.translate)
    prov = out.metadata[PROVENANCE_KEY]
    assert prov["method"] == "dcp" and prov["params"]["patch_size"] == 7
    assert "hazy dcp transmission" in viewer.layers
    assert viewer.layers["hazy dcp transmission"].data.shape == src.data.shape[:2]
    np.testing.assert_array_equal(src.data, before)


def test_threaded_run_stop_and_rerun(make_napari_viewer, qtbot):
    from napari_ssl_restore.data import fluorescence_timelapse

    viewer = make_napari_viewer()
    stack = fluorescence_timelapse(n_frames=6, size=64)["image"]
    viewer.add_image(stack, name="cells")
    widget = W.make_dcp_widget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.axes.value == "ZYX"
    widget.axes.value = "TYX"
    n_layers = len(viewer.layers)

    # stop before the first step is consumed: a closed-form method adds nothing
    widget._token = None
    worker = widget.run()
    widget.stop()
    with qtbot.waitSignal(worker.finished, timeout=30000):
        pass
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=5000)
    assert len(viewer.layers) == n_layers
    assert "stopped" in widget.status.value or "done" in widget.status.value

    # a fresh run completes and adds the result
    if "cells dcp" in viewer.layers:
        viewer.layers.remove("cells dcp")
        viewer.layers.remove("cells dcp transmission")
    worker = widget.run()
    with qtbot.waitSignal(worker.finished, timeout=30000):
        pass
    qtbot.waitUntil(lambda: "cells dcp" in viewer.layers, timeout=5000)
    assert viewer.layers["cells dcp"].data.shape == stack.shape
    assert widget.progress.value == 1000


def test_bad_axes_shows_error_and_adds_nothing(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 16), np.float32), name="img")
    widget = W.make_dcp_widget(viewer)
    messages = []
    monkeypatch.setattr("napari.utils.notifications.show_error", messages.append)
    widget.axes.value = "TYX"
    widget.run(sync=True)
    assert len(viewer.layers) == 1
    assert messages and "3 letters" in messages[0]


def test_sample_data_loads(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-ssl-restore", "hazy_scene")
    viewer.open_sample("napari-ssl-restore", "hazy_fluorescence")
    assert [layer.name for layer in viewer.layers] == ["hazy scene", "hazy fluorescence"]
    assert viewer.layers["hazy scene"].rgb
    widget = W.make_dcp_widget(viewer)
    widget.image.value = viewer.layers["hazy fluorescence"]
    assert widget.axes.value == "TYX"
