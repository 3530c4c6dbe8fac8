"""The plugin in a real napari viewer, reached the way users reach it (needs a display: xvfb-run).

Every widget is opened through napari's plugin machinery — ``add_plugin_dock_widget`` or the
Plugins-menu action itself — never by calling our classes directly, so a napari release that changes
how plugin widgets are made fails here.
"""
import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytestmark = pytest.mark.napari

from helpers import TINY, output_shape, sample, variant_id, variants  # noqa: E402

from napari_ssl_restore._napari import widgets as W  # noqa: E402
from napari_ssl_restore.core.io import PROVENANCE_KEY  # noqa: E402
from napari_ssl_restore.core.registry import list_methods  # noqa: E402

PLUGIN = "napari-ssl-restore"
MAX_DOCK_HEIGHT = 760  # a 1366x768 laptop screen


def _manifest():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    return pm.get_manifest(PLUGIN)


def widget_entry(method: str):
    """The manifest's widget contribution for ``method`` (found through its class name)."""
    mf = _manifest()
    python = {c.id: c.python_name for c in mf.contributions.commands}
    for w in mf.contributions.widgets:
        if python[w.command].endswith(":" + W.class_name(method)):
            return w
    raise AssertionError(f"no widget contribution for {method}")


def open_dock(viewer, method: str):
    """Open ``method``'s widget as napari's Plugins menu does; return ``(dock, widget)``."""
    return viewer.window.add_plugin_dock_widget(PLUGIN, widget_entry(method).display_name)


def run_and_wait(qtbot, widget, timeout=120_000):
    """Press Run and wait for the background worker to finish."""
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: widget._worker is None and widget.run_button.enabled, timeout=timeout)


def shown(w) -> bool:
    """Whether the widget is shown (with its dock): not hidden, whether or not a window is up."""
    return not w.native.isHidden()


def set_params(widget, **values):
    for name, value in values.items():
        widget.params[name].value = value


@pytest.mark.parametrize("method", list_methods())
def test_every_widget_opens_from_the_plugins_menu(method, make_napari_viewer):
    from napari._app_model import get_app_model

    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((32, 32), np.float32), name="img")
    dock, widget = open_dock(viewer, method)
    assert isinstance(widget, W.RestoreWidget) and widget.spec.name == method
    assert [w.name for w in widget.params] == [p.name for p in widget.spec.param_info]
    assert all(w.tooltip for w in widget.params)
    assert dock.sizeHint().height() <= MAX_DOCK_HEIGHT, "the dock does not fit a laptop screen"
    assert not widget.advanced.isExpanded()
    viewer.window.remove_dock_widget(dock)

    # the menu item itself: the app-model action napari builds from our manifest
    entry = widget_entry(method)
    get_app_model().commands.execute_command(entry.command).result()
    docked = [w for w in viewer.window.dock_widgets.values() if isinstance(w, W.RestoreWidget)]
    assert [w.spec.name for w in docked] == [method]


@pytest.mark.parametrize("variant", variants(), ids=variant_id)
def test_every_method_runs_to_the_end_in_its_dock(variant, make_napari_viewer, qtbot):
    method, settings = variant
    image, axes, extras = sample(method, settings)
    viewer = make_napari_viewer()
    kw = {"rgb": True} if axes.endswith("C") else {}
    if axes.startswith("T"):
        kw["axis_labels"] = tuple(axes.lower())
    src = viewer.add_image(image, name="input", **kw)
    for name, value in extras.items():
        if name in ("mask", "hints"):
            viewer.add_labels(value.astype(np.int32), name=name)
        else:
            viewer.add_image(value, name=name)
    viewer.layers.selection.active = src
    _, widget = open_dock(viewer, method)
    assert widget.image.value == src and widget.axes.value == axes
    set_params(widget, **settings)  # the task/mode first: it decides what is shown
    set_params(widget, **TINY[method])
    for name in extras:
        assert shown(widget.inputs[name])
        widget.inputs[name].value = viewer.layers[name]
    run_and_wait(qtbot, widget)
    assert widget.status.value.startswith("done"), widget.status.value
    assert widget.progress.value == 1000
    out = viewer.layers[f"input {method}"]
    expected = output_shape(method, settings, image, axes)
    if isinstance(out, napari.layers.Labels):
        expected = tuple(s for s, a in zip(expected, axes, strict=True) if a != "C")
    assert out.data.shape == expected
    assert out.metadata[PROVENANCE_KEY]["method"] == method
    assert not any("preview" in layer.name for layer in viewer.layers), [
        (layer.name, layer.data.shape) for layer in viewer.layers]
    np.testing.assert_array_equal(src.data, image)


def test_only_what_the_task_uses_is_shown(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((32, 32), np.float32), name="img")
    _, widget = open_dock(viewer, "dip")

    p = widget.params
    assert not shown(p.sr_factor) and not shown(p.psf_sigma)
    assert not shown(widget.inputs["mask"]) and not shown(widget.inputs["psf"])
    p.task.value = "sr"
    assert shown(p.sr_factor) and not shown(p.psf_sigma)
    p.task.value = "inpaint"
    assert shown(widget.inputs["mask"]) and not shown(p.sr_factor)
    p.task.value = "deconv"
    assert shown(p.psf_sigma) and shown(widget.inputs["psf"]) and not shown(widget.inputs["mask"])
    # where the task's defaults lose to (or barely beat) the classical baseline, the dock says so
    assert shown(widget.standing) and "richardson-lucy" in widget.standing.value
    p.task.value = "sr"
    assert not shown(widget.standing)
    p.task.value = "denoise"
    assert shown(widget.standing) and "BM3D" in widget.standing.value
    _, gan = open_dock(viewer, "physics-gan")
    gan.params.task.value = "dehaze"
    assert shown(gan.standing) and "use dcp or cycle-dehaze" in gan.standing.value
    # paper-level knobs wait in the collapsed advanced section
    assert p.channels.native.parent() is not widget.form.native
    assert p.task.native.parent() is not widget.advanced_form.native


def test_empty_model_fields_are_empty(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = open_dock(viewer, "noise2noise")
    assert widget.params.model.line_edit.value == ""
    assert widget._param_values()["model"] == "" and widget._param_values()["save_model"] == ""


def test_stop_before_a_usable_estimate_adds_nothing_and_says_why(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    src = viewer.add_image(np.random.default_rng(0).random((48, 48)).astype(np.float32),
                           name="cells")
    _, widget = open_dock(viewer, "dip")
    set_params(widget, **TINY["dip"] | {"max_iter": 100_000, "es_window": 10_000})
    n_layers = len(viewer.layers)
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: "iter" in widget.status.value, timeout=60_000)  # the first report
    widget.stop_button.native.click()
    assert widget.status.value == "stopping..."
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=10_000)  # answers at once
    assert widget.status.value.startswith("stopped at iteration")
    assert "nothing was kept" in widget.status.value
    assert len(viewer.layers) == n_layers and src.name == "cells"


def test_stop_keeps_the_best_estimate_so_far(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    viewer.add_image(stack, name="stack")
    _, widget = open_dock(viewer, "dip")
    set_params(widget, **TINY["dip"] | {"max_iter": 100_000, "es_window": 5,
                                        "es_patience": 100_000})
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: "best@" in widget.status.value, timeout=60_000)
    widget.stop_button.native.click()
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=10_000)
    out = viewer.layers["stack dip"]
    prov = out.metadata[PROVENANCE_KEY]
    assert prov["stopped"] and prov["planes_done"] == 1
    assert widget.status.value == ("stopped: best result so far kept for 1/2 plane(s); plane 2 "
                                   "NOT restored (input kept)")
    np.testing.assert_allclose(out.data[1], stack[1], atol=1e-5)  # float32 round trip


def test_dcp_adds_layers_with_scale_and_provenance(make_napari_viewer, qtbot, hazy_small):
    viewer = make_napari_viewer()
    src = viewer.add_image(hazy_small["image"], name="hazy", rgb=True, scale=(0.5, 0.5),
                           translate=(3, 4))
    before = src.data.copy()
    _, widget = open_dock(viewer, "dcp")
    assert widget.image.value == src and widget.axes.value == "YXC"
    widget.params.patch_size.value = 7
    run_and_wait(qtbot, widget)
    out = viewer.layers["hazy dcp"]
    assert out.data.shape == src.data.shape and out.data.dtype == np.uint8
    np.testing.assert_allclose(out.scale, src.scale)
    np.testing.assert_allclose(out.translate, src.translate)
    prov = out.metadata[PROVENANCE_KEY]
    assert prov["method"] == "dcp" and prov["params"]["patch_size"] == 7
    assert viewer.layers["hazy dcp transmission"].data.shape == src.data.shape[:2]
    np.testing.assert_array_equal(src.data, before)


def test_stop_of_a_closed_form_method_adds_nothing_then_rerun_works(make_napari_viewer, qtbot,
                                                                    monkeypatch):
    import time

    from napari_ssl_restore.data import fluorescence_timelapse

    viewer = make_napari_viewer()
    stack = fluorescence_timelapse(n_frames=6, size=64)["image"]
    src = viewer.add_image(stack, name="cells", axis_labels=("t", "y", "x"))
    before = stack.copy()
    _, widget = open_dock(viewer, "dcp")
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
    widget.run_button.native.click()
    assert not widget.run_button.enabled and widget.stop_button.enabled
    qtbot.waitUntil(lambda: widget.progress.value > 0, timeout=60000)
    widget.stop_button.native.click()
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=10000)
    assert len(viewer.layers) == n_layers
    assert widget.status.value.startswith("stopped")
    monkeypatch.setattr(W, "execute", real_execute)
    run_and_wait(qtbot, widget)
    assert viewer.layers["cells dcp"].data.shape == stack.shape
    assert widget.progress.value == 1000 and widget.status.value == "done"
    np.testing.assert_array_equal(src.data, before)


def test_bad_axes_shows_error_and_adds_nothing(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 16), np.float32), name="img")
    _, widget = open_dock(viewer, "dcp")
    messages = []
    monkeypatch.setattr("napari.utils.notifications.show_error", messages.append)
    widget.axes.value = "TYX"
    widget.run_button.native.click()
    assert len(viewer.layers) == 1
    assert messages and "3 letters" in messages[0]


def test_every_sample_loads(make_napari_viewer):
    viewer = make_napari_viewer()
    for sample_data in _manifest().contributions.sample_data:
        viewer.open_sample(PLUGIN, sample_data.key)
    assert viewer.layers["hazy scene"].rgb
    viewer.layers.selection.active = viewer.layers["hazy fluorescence"]
    _, widget = open_dock(viewer, "frame2frame")
    assert widget.image.value == viewer.layers["hazy fluorescence"]
    assert widget.axes.value == "TYX"
    # previews and results never offer themselves as inputs
    assert all(layer.name in [v.name for v in viewer.layers] for layer in widget.image.choices)


def test_an_unpaired_sample_leaves_its_degraded_layer_active(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "blurred_fields")  # the sharp examples load first, below it
    _, widget = open_dock(viewer, "disentangled-deblur")
    assert widget.image.value == viewer.layers["blurred fields (unknown blurs)"]
    assert widget.axes.value == "ZYX"
    assert widget.inputs["clean"].value == viewer.layers["sharp examples (unpaired)"]


def test_a_sample_fills_the_inputs_it_was_made_for(make_napari_viewer):
    """A dock whose image is a sample's layer takes the layers the sample made for its inputs (the
    unpaired examples as ``clean``, the other acquisition as ``target``), following the image;
    never the image itself, never over the user's choice, never examples made for another image."""
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "noisy_pair")
    _, n2n = open_dock(viewer, "noise2noise")
    a, b = viewer.layers["acquisition A"], viewer.layers["acquisition B"]
    assert n2n.image.value == b and n2n.inputs["target"].value == a
    n2n.image.value = a  # the filled target follows the image
    assert n2n.inputs["target"].value == b
    other = viewer.add_image(np.zeros(a.data.shape, np.float32), name="other")
    n2n.inputs["target"].value = other  # the user's choice stays
    n2n.image.value = b
    assert n2n.inputs["target"].value == other
    n2n.image.value = other  # ... unless it is the image: emptied, nothing made for "other"
    assert n2n.inputs["target"].value is None
    viewer.open_sample(PLUGIN, "blurred_fields")
    _, gan = open_dock(viewer, "physics-gan")  # its image: the blurred fields (active)
    sharp = viewer.layers["sharp examples (unpaired)"]
    assert gan.inputs["clean"].value == sharp
    viewer.open_sample(PLUGIN, "blurred_cells")  # not for this image: nothing changes
    assert gan.image.value == viewer.layers["blurred fields (unknown blurs)"]
    assert gan.inputs["clean"].value == sharp
    gan.image.value = viewer.layers["blurred cells (widefield, PSF sigma 2)"]
    assert gan.inputs["clean"].value == viewer.layers["clean examples (unpaired)"]
    gan.image.value = other  # nothing made for it: the filled examples go
    assert gan.inputs["clean"].value is None
    _, assistant = viewer.window.add_plugin_dock_widget(PLUGIN, "Restore assistant")
    assistant.image.value = a  # the assistant's second acquisition is filled the same way
    assert assistant.second.value == b
    assistant.image.value = other
    assert assistant.second.value is None


def test_dip_sr_preview_and_scale(make_napari_viewer, qtbot):
    from napari_ssl_restore.data import noisy_cells

    viewer = make_napari_viewer()
    src = viewer.add_image(noisy_cells(size=24)["image"], name="cells", scale=(2.0, 2.0))
    _, widget = open_dock(viewer, "dip")
    set_params(widget, task="sr", sr_factor=2, max_iter=10, channels=8, depth=2, input_depth=4,
               preview_every=5)
    seen = []
    real_show = widget._show_preview
    widget._show_preview = lambda data: (seen.append(data.shape), real_show(data))
    run_and_wait(qtbot, widget)
    out = viewer.layers["cells dip"]
    assert out.data.shape == (48, 48)
    np.testing.assert_allclose(out.scale, (1.0, 1.0))
    np.testing.assert_allclose(out.translate, (-0.5, -0.5))
    assert seen and seen[0] == (48, 48, 1)
    assert not any("preview" in layer.name for layer in viewer.layers)
    assert out.metadata[PROVENANCE_KEY]["zoom"] == 2
    assert src.data.shape == (24, 24)


def test_dip_inpaint_from_a_shapes_layer(make_napari_viewer, qtbot):
    from napari_ssl_restore.data import noisy_cells

    viewer = make_napari_viewer()
    img = noisy_cells(size=24)["image"]
    viewer.add_image(img, name="cells")
    viewer.add_shapes([np.array([[4, 4], [4, 12], [12, 12], [12, 4]])], shape_type="polygon",
                      name="holes")
    viewer.layers.selection.active = viewer.layers["cells"]
    _, widget = open_dock(viewer, "dip")
    set_params(widget, task="inpaint", max_iter=5, channels=8, depth=2)
    widget.inputs["mask"].value = viewer.layers["holes"]
    run_and_wait(qtbot, widget)
    out = viewer.layers["cells dip"].data
    np.testing.assert_allclose(out[20:, 20:], img[20:, 20:], atol=1e-6)  # measured pixels kept
    assert not np.array_equal(out[6:10, 6:10], img[6:10, 6:10])


def test_noise2noise_trains_keeps_the_model_and_applies_it(make_napari_viewer, qtbot):
    from napari_ssl_restore.data import noisy_pair

    viewer = make_napari_viewer()
    s = noisy_pair(size=32, sigma=0.1)
    viewer.add_image(s["image"], name="A")
    viewer.add_image(s["target"], name="B")
    _, widget = open_dock(viewer, "noise2noise")
    widget.image.value = viewer.layers["A"]
    widget.inputs["target"].value = viewer.layers["B"]
    set_params(widget, steps=4, features=8, depth=2, patch_size=16, batch_size=2)
    run_and_wait(qtbot, widget)
    assert "A noise2noise" in viewer.layers
    p = widget.params
    assert p.mode.value == "apply" and str(p.model.value).endswith(".pt")
    assert "Model kept at" in widget.status.value
    assert not shown(widget.inputs["target"])  # apply needs no pairs
    widget.image.value = viewer.layers["B"]
    run_and_wait(qtbot, widget)
    prov = viewer.layers["B noise2noise"].metadata[PROVENANCE_KEY]
    assert prov["params"]["mode"] == "apply"


def test_double_dip_previews_and_labels(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((24, 24)).astype(np.float32), name="img")
    hints = np.zeros((24, 24), np.int32)
    hints[2:5, 2:5] = 1
    viewer.add_labels(hints, name="scribbles")
    _, widget = open_dock(viewer, "double-dip")
    assert widget.params.task.value == "segment"
    widget.inputs["hints"].value = viewer.layers["scribbles"]
    set_params(widget, max_iter=10, channels=8, depth=2, input_depth=4, preview_every=5)
    seen = []
    real_show = widget._show_preview
    widget._show_preview = lambda p: (seen.append(sorted(p)), real_show(p))
    run_and_wait(qtbot, widget)
    assert seen and seen[0] == ["layer1", "layer2", "mask"]
    assert isinstance(viewer.layers["img double-dip"], napari.layers.Labels)
    for suffix in ("layer1", "layer2", "mask"):
        assert f"img double-dip {suffix}" in viewer.layers
    assert not any("preview" in layer.name for layer in viewer.layers)


def test_double_dip_separates_two_channel_layers(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    yy, xx = np.mgrid[:24, :24]
    a, b = 0.5 + 0.4 * np.sin(xx / 1.3), 0.5 + 0.4 * np.sin(yy / 2.1)
    viewer.add_image((a + 0.5 * b).astype(np.float32), name="ch1")
    viewer.add_image((0.5 * a + b).astype(np.float32), name="ch2")
    _, widget = open_dock(viewer, "double-dip")
    widget.image.value = viewer.layers["ch1"]
    set_params(widget, task="separate", max_iter=10, channels=8, depth=2, input_depth=4)
    widget.inputs["second"].value = viewer.layers["ch2"]
    before = [layer.name for layer in viewer.layers]
    run_and_wait(qtbot, widget)
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
    _, widget = open_dock(viewer, "frame2frame")
    assert widget.axes.value == "TYX"
    set_params(widget, mode="online", steps_per_frame=2, patch_size=32)
    shapes = []
    real_show = widget._show_preview

    def spy(preview):
        real_show(preview)
        preview_layer = viewer.layers["movie frame2frame preview"]
        shapes.append((preview_layer.data.shape, tuple(preview_layer.scale)))

    widget._show_preview = spy
    widget.run(sync=True)  # synchronous: the Stop below lands at an exact step
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
    assert "2/4" in widget.status.value and "frames 3-4 NOT restored" in widget.status.value
    np.testing.assert_allclose(out.data[2:], stack[2:], atol=1e-5)
    np.testing.assert_array_equal(src.data, before)



def test_a_dask_layer_streams_and_comes_back_lazy(make_napari_viewer, qtbot):
    import dask.array as da

    data = (np.random.default_rng(0).random((4, 48, 48)) * 3000).astype(np.uint16)
    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(data, chunks=(1, 48, 48)), name="lazy",
                     axis_labels=("t", "y", "x"))
    _, widget = open_dock(viewer, "dcp")
    run_and_wait(qtbot, widget)
    out = viewer.layers["lazy dcp"]
    assert type(out.data).__module__.startswith("dask")  # over the written zarr store
    np.testing.assert_array_equal(np.asarray(out.data),
                                  __import__("napari_ssl_restore").restore(data, "dcp",
                                                                           axes="TYX"))
    widget.estimate(sync=True)
    assert "working memory" in widget.status.value and "s/plane" in widget.status.value


def test_export_to_bioimageio_beside_the_model_fields(make_napari_viewer, qtbot, tmp_path,
                                                       monkeypatch):
    pytest.importorskip("bioimageio.spec")
    from qtpy.QtWidgets import QFileDialog

    from napari_ssl_restore.core import models
    from napari_ssl_restore.nets.dncnn import DnCNN

    pt = models.save_model(models.checkpoint(
        DnCNN(1, 1, features=4, depth=3), architecture="dncnn",
        normalization={"kind": "percentile", "low": 0.1, "high": 99.9},
        provenance={"method": "frame2frame"}), tmp_path / "tiny.pt")
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.random.default_rng(0).random((40, 40)).astype(np.float32), name="img")
    dock, _ = open_dock(viewer, "physics-gan")  # the most settings: the button still fits
    assert dock.sizeHint().height() <= MAX_DOCK_HEIGHT
    viewer.window.remove_dock_widget(dock)
    _, n2n = open_dock(viewer, "noise2noise")  # after the save-model field, in the basic form
    names = [w.name for w in n2n.form]
    assert names.index("export_bioimageio") == names.index("save_model") + 1
    messages = []
    monkeypatch.setattr("napari.utils.notifications.show_error", messages.append)
    n2n.export_bioimageio(str(tmp_path / "none.zip"), sync=True)  # nothing trained yet
    assert not (tmp_path / "none.zip").exists() and "no model to export" in messages[0]

    _, widget = open_dock(viewer, "dncnn")
    assert shown(widget.export_button)
    widget.params.model.value = pt
    out = tmp_path / "tiny.zip"
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *args, **kwargs: (str(out), "")))
    widget.export_button.native.click()
    qtbot.waitUntil(lambda: widget.status.value.startswith(("exported", "export failed"))
                    and widget.export_button.enabled, timeout=120_000)
    assert widget.status.value == f"exported {out}", widget.status.value
    assert models.load_checkpoint(out)["architecture"] == "dncnn"
