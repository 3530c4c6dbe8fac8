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


def test_threaded_stop_adds_nothing_then_rerun_works(make_napari_viewer, qtbot, monkeypatch):
    import time

    from napari_ssl_restore.data import fluorescence_timelapse

    viewer = make_napari_viewer()
    stack = fluorescence_timelapse(n_frames=6, size=64)["image"]
    src = viewer.add_image(stack, name="cells", axis_labels=("t", "y", "x"))
    before = stack.copy()
    widget = W.make_dcp_widget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.axes.value == "TYX"
    n_layers = len(viewer.layers)

    real_execute = W.execute

    def slow_execute(job):  # the real method, slowed down so Stop lands mid-run
        gen = real_execute(job)
        step = next(gen)
        while True:
            time.sleep(0.2)
            yield step
            step = next(gen)

    monkeypatch.setattr(W, "execute", slow_execute)
    worker = widget.run()
    assert not widget.run_button.enabled and widget.stop_button.enabled
    qtbot.waitUntil(lambda: widget.progress.value > 0, timeout=60000)
    with qtbot.waitSignal(worker.finished, timeout=120000):
        widget.stop()
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=5000)
    assert len(viewer.layers) == n_layers
    assert widget.status.value.startswith("stopped")
    np.testing.assert_array_equal(src.data, before)

    monkeypatch.setattr(W, "execute", real_execute)
    worker = widget.run()
    with qtbot.waitSignal(worker.finished, timeout=120000):
        pass
    qtbot.waitUntil(lambda: "cells dcp" in viewer.layers, timeout=5000)
    assert viewer.layers["cells dcp"].data.shape == stack.shape
    assert widget.progress.value == 1000 and widget.status.value == "done"
    np.testing.assert_array_equal(src.data, before)


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


def test_dip_widget_sr_preview_and_scale(make_napari_viewer):
    from napari_ssl_restore.data import noisy_cells

    viewer = make_napari_viewer()
    src = viewer.add_image(noisy_cells(size=24)["image"], name="cells", scale=(2.0, 2.0))
    widget = W.make_dip_widget(viewer)
    assert widget.device.visible is False or widget.device.value == "auto"
    p = widget.params
    p.task.value = "sr"
    p.sr_factor.value = 2
    p.max_iter.value = 10
    p.channels.value = 8
    p.depth.value = 2
    p.input_depth.value = 4
    p.preview_every.value = 5
    seen = []
    widget._show_preview = lambda data, _orig=widget._show_preview: (seen.append(data.shape),
                                                                     _orig(data))
    widget.run(sync=True)
    out = viewer.layers["cells dip"]
    assert out.data.shape == (48, 48)
    np.testing.assert_allclose(out.scale, (1.0, 1.0))
    np.testing.assert_allclose(out.translate, (-0.5, -0.5))
    assert seen and seen[0] == (48, 48, 1)
    assert not any("preview" in layer.name for layer in viewer.layers)
    assert out.metadata[PROVENANCE_KEY]["zoom"] == 2
    assert src.data.shape == (24, 24)


def test_dip_widget_inpaint_from_shapes_layer(make_napari_viewer):
    from napari_ssl_restore.data import noisy_cells

    viewer = make_napari_viewer()
    img = noisy_cells(size=24)["image"]
    viewer.add_image(img, name="cells")
    viewer.add_shapes([np.array([[4, 4], [4, 12], [12, 12], [12, 4]])], shape_type="polygon",
                      name="holes")
    widget = W.make_dip_widget(viewer)
    widget.params.task.value = "inpaint"
    widget.params.max_iter.value = 5
    widget.params.channels.value = 8
    widget.params.depth.value = 2
    widget.inputs["mask"].value = viewer.layers["holes"]
    widget.run(sync=True)
    out = viewer.layers["cells dip"].data
    np.testing.assert_allclose(out[20:, 20:], img[20:, 20:], atol=1e-6)  # measured pixels kept
    assert not np.array_equal(out[6:10, 6:10], img[6:10, 6:10])


def test_noise2noise_widget_trains_keeps_model_and_applies(make_napari_viewer, tmp_path):
    from napari_ssl_restore.data import noisy_pair

    viewer = make_napari_viewer()
    s = noisy_pair(size=32, sigma=0.1)
    viewer.add_image(s["image"], name="A")
    viewer.add_image(s["target"], name="B")
    widget = W.make_noise2noise_widget(viewer)
    assert widget.image.value.name in ("A", "B")
    widget.image.value = viewer.layers["A"]
    widget.inputs["target"].value = viewer.layers["B"]
    p = widget.params
    p.steps.value, p.features.value, p.depth.value = 4, 8, 2
    p.patch_size.value, p.batch_size.value = 16, 2
    widget.run(sync=True)
    assert "A noise2noise" in viewer.layers
    assert p.mode.value == "apply" and str(p.model.value).endswith(".pt")
    assert "Model kept at" in widget.status.value
    widget.image.value = viewer.layers["B"]
    widget.inputs["target"].value = None
    widget.run(sync=True)
    assert "B noise2noise" in viewer.layers
    prov = viewer.layers["B noise2noise"].metadata[PROVENANCE_KEY]
    assert prov["params"]["mode"] == "apply"


def test_double_dip_widget_previews_and_labels(make_napari_viewer):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((24, 24)).astype(np.float32), name="img")
    hints = np.zeros((24, 24), np.int32)
    hints[2:5, 2:5] = 1
    viewer.add_labels(hints, name="scribbles")
    widget = W.make_double_dip_widget(viewer)
    assert widget.params.task.value == "segment"
    widget.inputs["hints"].value = viewer.layers["scribbles"]
    for name, value in {"max_iter": 10, "channels": 8, "depth": 2, "input_depth": 4,
                        "preview_every": 5}.items():
        getattr(widget.params, name).value = value
    seen = []
    widget._show_preview = lambda p, _orig=widget._show_preview: (seen.append(sorted(p)), _orig(p))
    widget.run(sync=True)
    assert seen and seen[0] == ["layer1", "layer2", "mask"]
    assert isinstance(viewer.layers["img double-dip"], napari.layers.Labels)
    for suffix in ("layer1", "layer2", "mask"):
        assert f"img double-dip {suffix}" in viewer.layers
    assert not any("preview" in layer.name for layer in viewer.layers)


def test_double_dip_separates_two_channel_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    yy, xx = np.mgrid[:24, :24]
    a, b = 0.5 + 0.4 * np.sin(xx / 1.3), 0.5 + 0.4 * np.sin(yy / 2.1)
    viewer.add_image((a + 0.5 * b).astype(np.float32), name="ch1")
    viewer.add_image((0.5 * a + b).astype(np.float32), name="ch2")
    widget = W.make_double_dip_widget(viewer)
    widget.image.value = viewer.layers["ch1"]
    widget.params.task.value = "separate"
    widget.inputs["second"].value = viewer.layers["ch2"]
    for name, value in {"max_iter": 10, "channels": 8, "depth": 2, "input_depth": 4}.items():
        getattr(widget.params, name).value = value
    before = [layer.name for layer in viewer.layers]
    widget.run(sync=True)
    new = [layer.name for layer in viewer.layers if layer.name not in before]
    assert {"ch1 double-dip", "ch1 double-dip layer2", "ch1 double-dip mask",
            "ch1 double-dip unmixed1", "ch1 double-dip unmixed2"} <= set(new)
    assert viewer.layers["ch1 double-dip"].data.shape == (24, 24)


def test_frame2frame_online_fills_the_preview_and_stop_keeps_frames_done(make_napari_viewer):
    from napari_ssl_restore.data import noisy_video

    viewer = make_napari_viewer()
    stack = noisy_video(n_frames=4, size=32, sigma=0.1)["image"]
    src = viewer.add_image(stack, name="movie", axis_labels=("t", "y", "x"), scale=(2, 0.5, 0.5))
    before = stack.copy()
    widget = W.make_frame2frame_widget(viewer)
    assert widget.axes.value == "TYX"
    p = widget.params
    p.mode.value, p.steps_per_frame.value, p.patch_size.value = "online", 2, 32
    shapes = []
    real_show = widget._show_preview

    def spy(preview):
        real_show(preview)
        preview_layer = viewer.layers["movie frame2frame preview"]
        shapes.append((preview_layer.data.shape, tuple(preview_layer.scale)))

    widget._show_preview = spy  # (monkeypatch cannot undo attributes on a magicgui Container)
    widget.run(sync=True)
    # the whole time-lapse, filling up, overlaid on the input
    assert len(shapes) == 4  # one preview per restored frame
    assert all(s == (stack.shape, tuple(src.scale)) for s in shapes)
    assert "movie frame2frame preview" not in viewer.layers
    out = viewer.layers["movie frame2frame"]
    assert out.data.shape == stack.shape
    np.testing.assert_allclose(out.scale, src.scale)
    assert widget.status.value == "done"

    real_on_step = widget._on_step
    seen = []

    def press_stop_in_frame_3(step):  # frame 0: 1 step, frame 1: 3, then frame 2 is training
        real_on_step(step)
        seen.append(step)
        if len(seen) == 5:
            widget.stop()

    widget._on_step = press_stop_in_frame_3
    viewer.layers.remove(out)
    widget.run(sync=True)
    out = viewer.layers["movie frame2frame"]
    prov = out.metadata[PROVENANCE_KEY]
    assert prov["stopped"] and prov["planes_done"] == 2
    assert "2/4" in widget.status.value and "NOT restored" in widget.status.value
    np.testing.assert_allclose(out.data[2:], stack[2:], atol=1e-5)
    np.testing.assert_array_equal(src.data, before)

