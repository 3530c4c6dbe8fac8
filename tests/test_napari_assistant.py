"""The Restore assistant dock in a real napari viewer, opened the way users open it (xvfb-run).

The dock is reached through ``viewer.window.add_plugin_dock_widget`` (what the Plugins menu calls);
the method docks its buttons open are reached the same way, by the assistant itself.
"""
import time

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytestmark = pytest.mark.napari

from napari_ssl_restore import assistant as core_assistant  # noqa: E402
from napari_ssl_restore._napari import widgets as W  # noqa: E402
from napari_ssl_restore._napari.assistant import AssistantWidget, dock_names  # noqa: E402
from napari_ssl_restore.data import noisy_pair, noisy_video  # noqa: E402

PLUGIN = "napari-ssl-restore"
MAX_DOCK_HEIGHT = 760  # a 1366x768 laptop screen


def open_assistant(viewer) -> tuple:
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Restore assistant")
    assert isinstance(widget, AssistantWidget)
    return dock, widget


def method_docks(viewer) -> list:
    return [w for w in viewer.window.dock_widgets.values() if isinstance(w, W.RestoreWidget)]


def test_every_method_dock_has_a_menu_name():
    plugin, names = dock_names()
    assert plugin == PLUGIN
    assert names["noise2noise"][0].startswith("Noise2Noise") and names["dcp"][1]


def test_analyse_a_time_lapse_then_open_each_recommendation(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    movie = noisy_video(n_frames=6, size=96, sigma=0.1)["image"]
    viewer.add_image(np.zeros((32, 32), np.float32), name="other")
    src = viewer.add_image(movie, name="movie", axis_labels=("t", "y", "x"))
    dock, widget = open_assistant(viewer)
    assert widget.image.value == src and widget.axes.value == "TYX"  # starts on the active layer
    assert not widget.rec_buttons and widget.report is None
    widget.analyse(sync=True)
    report = widget.report
    assert widget.status.value.startswith("done"), widget.status.value
    assert widget.progress.value == 1000 and widget.analyse_button.enabled
    assert report["summary"] in widget.summary.text() and report["time"] is not None
    assert "noise: gaussian" in widget.details.text() and "motion:" in widget.details.text()
    assert dock.sizeHint().height() <= MAX_DOCK_HEIGHT, "the dock does not fit a laptop screen"
    recs = report["recommendations"]
    assert len(widget.rec_buttons) == len(recs) >= 1
    assert len(viewer.layers) == 2  # analysing adds nothing
    _, names = dock_names()
    for button, rec in zip(widget.rec_buttons, recs, strict=True):
        if rec["method"] not in names:
            assert not button.isEnabled()
            continue
        assert names[rec["method"]][1] in button.text() and rec["why"] in button.toolTip()
        button.click()
        opened = [w for w in method_docks(viewer) if w.spec.name == rec["method"]]
        assert len(opened) == 1, rec["method"]
        method = opened[0]
        assert method.image.value == src and method.axes.value == "TYX"
        for name, value in rec["params"].items():
            assert method.params[name].value == value, (rec["method"], name)
        assert widget.status.value.startswith(f"opened {rec['method']}"), widget.status.value
    # clicking again reuses the open dock (and its widget) instead of failing or adding one
    first = next(r for r in recs if r["method"] in names)
    before = method_docks(viewer)
    again = widget.open_recommendation(recs.index(first))
    assert again is not None and any(again[1] is w or again[1] == w for w in before)
    assert len(method_docks(viewer)) == len(before)


def test_noise2noise_gets_the_second_acquisition_as_target(make_napari_viewer):
    viewer = make_napari_viewer()
    pair = noisy_pair(size=96, sigma=0.15)
    a = viewer.add_image(pair["image"], name="A")
    b = viewer.add_image(pair["target"], name="B")
    viewer.layers.selection.active = a
    _, widget = open_assistant(viewer)
    widget.second.value = b
    widget.analyse(sync=True)
    assert widget.report["second"]["registered"], widget.report["second"]
    methods = [r["method"] for r in widget.report["recommendations"]]
    assert "noise2noise" in methods and "second: registered" in widget.details.text()
    widget.rec_buttons[methods.index("noise2noise")].click()
    (n2n,) = [w for w in method_docks(viewer) if w.spec.name == "noise2noise"]
    assert n2n.image.value == a and n2n.inputs["target"].value == b


def test_stop_returns_to_idle_at_once_and_adds_nothing(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(noisy_pair(size=64)["image"], name="img")
    n_layers = len(viewer.layers)
    real = core_assistant.iter_analyse

    def slow(*args, **kwargs):  # the real analysis, slowed down so Stop lands mid-run
        gen = real(*args, **kwargs)
        step = next(gen)
        while True:
            time.sleep(0.3)
            yield step
            step = next(gen)

    monkeypatch.setattr(core_assistant, "iter_analyse", slow)
    _, widget = open_assistant(viewer)
    widget.analyse_button.native.click()
    worker = widget._worker
    assert not widget.analyse_button.enabled and widget.stop_button.enabled
    qtbot.waitUntil(lambda: widget.progress.value > 0, timeout=10000)
    with qtbot.waitSignal(worker.finished, timeout=10000):
        widget.stop_button.native.click()
        # idle at once, before the worker has seen the Stop
        assert widget.analyse_button.enabled and not widget.stop_button.enabled
        assert widget.status.value.startswith("stopped")
    assert widget.status.value.startswith("stopped") and widget.report is None
    assert not widget.rec_buttons and len(viewer.layers) == n_layers


def test_a_constant_layer_shows_one_error_line(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.full((64, 64), 7, np.uint16), name="flat")
    messages = []
    monkeypatch.setattr("napari.utils.notifications.show_error", messages.append)
    _, widget = open_assistant(viewer)
    widget.analyse_button.native.click()  # in the worker thread, as a user runs it
    qtbot.waitUntil(lambda: widget.analyse_button.enabled, timeout=10000)
    assert widget.status.value.startswith("error: the image is constant"), widget.status.value
    assert "\n" not in widget.status.value and "Traceback" not in widget.status.value
    assert len(messages) == 1 and "constant" in messages[0]
    assert widget.report is None and not widget.rec_buttons
