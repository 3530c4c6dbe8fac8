"""Walk the plugin as a user does, in a real napari window, and report what fails.

Opens napari at a laptop's screen size (1366x768), loads every sample, opens every widget through the
Plugins-menu action, runs each method for a few iterations on a sample, presses Stop on a long DIP
run mid-way, and saves a screenshot of the window with each dock. Prints ``failures: none`` or the
list, and exits non-zero on a failure.

usage: xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/napari_tour.py OUTDIR
"""
from __future__ import annotations

import os
import sys
import time
import traceback

import napari
from napari._app_model import get_app_model
from npe2 import PluginManager
from qtpy.QtWidgets import QApplication

PLUGIN = "napari-ssl-restore"
NET = {"channels": 16, "depth": 3, "input_depth": 8}
# method -> (sample layer to run on, a few iterations' worth of settings, extra inputs by layer)
RUNS = {
    "dcp": ("hazy scene", {}, {}),
    "dip": ("noisy cells", {"max_iter": 40, **NET}, {}),
    "noise2noise": ("acquisition A", {"steps": 20, "features": 16, "depth": 3, "patch_size": 32},
                    {"target": "acquisition B"}),
    "double-dip": ("noisy cells", {"task": "separate", "max_iter": 30, **NET}, {}),
    "dncnn": ("noisy time-lapse", {}, {}),
    "frame2frame": ("noisy time-lapse", {"mode": "online", "steps_per_frame": 1,
                                         "patch_size": 64}, {}),
    "restore-from-restored": ("noisy time-lapse", {"mode": "online", "steps_per_frame": 1,
                                                   "patch_size": 64}, {}),
    "physics-gan": ("blurred cells (widefield, PSF sigma 2)", {"steps": 200},
                    {"clean": "clean examples (unpaired)"}),
    "cycle-dehaze": ("hazy widefield fields", {"steps": 100, "check_every": 50},
                     {"clean": "clear examples (unpaired)"}),
    "disentangled-deblur": ("blurred fields (unknown blurs)", {"steps": 100, "check_every": 50},
                            {"clean": "sharp examples (unpaired)"}),
    "richardson-lucy": ("blurred cells (widefield, PSF sigma 2)", {}, {}),
    "classic-denoise": ("noisy cells", {}, {}),
}
ASSISTANT_LAYER = "noisy cells"
"""The layer the Restore assistant analyses in the tour."""


def settle(seconds: float = 0.0) -> None:
    """Let Qt lay out and paint (a dock added a moment ago has no geometry yet)."""
    end = time.monotonic() + seconds
    while True:
        QApplication.processEvents()
        if time.monotonic() >= end:
            return
        time.sleep(0.02)


def wait_until(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        QApplication.processEvents()
        if predicate():
            return True
        time.sleep(0.02)
    return False


def dip_stack(viewer, widget, out: str, i: int) -> list[str]:
    """A 3-plane stack fitted two planes at a time (plane_batch=2): a run to the end, then a run
    stopped during the first batch, which keeps both of its planes."""
    import numpy as np

    fails = []
    base = np.asarray(viewer.layers["noisy cells"].data, np.float32)
    rng = np.random.default_rng(0)
    stack = np.stack([base + 0.05 * rng.standard_normal(base.shape) for _ in range(3)])
    viewer.add_image(stack.astype(np.float32), name="noisy stack")
    widget.image.value = viewer.layers["noisy stack"]
    widget.axes.value = "ZYX"
    widget.params.max_iter.value = 40
    widget.params.es_patience.value = 500
    widget.params.plane_batch.value = 2
    widget.run_button.native.click()
    if not wait_until(lambda: widget._worker is None, timeout=300):
        return ["dip stack: did not finish in 300 s"]
    result = viewer.layers["noisy stack dip"] if "noisy stack dip" in viewer.layers else None
    if result is None or result.data.shape != stack.shape:
        fails.append(f"dip stack: no result of shape {stack.shape} ({widget.status.value})")
    print(f"dip stack, plane_batch=2: status {widget.status.value!r}")
    settle(0.2)
    viewer.screenshot(path=f"{out}/result_{i}_dip_stack.png", canvas_only=False)
    widget.params.max_iter.value = 100_000
    widget.params.es_patience.value = 100_000
    widget.run_button.native.click()
    import re

    def iteration() -> int:
        found = re.search(r"planes 1-2/3, iter (\d+)/", widget.status.value)
        return int(found.group(1)) if found else 0

    wait_until(lambda: iteration() >= 50, timeout=120)  # past early stopping's first estimate
    return fails + press_stop(widget, "dip stack", lambda status: "2/3" in status)


def press_stop(widget, label: str, expected) -> list[str]:
    """Press Stop on a running dock; it must end the run within 30 s with a status ``expected``
    accepts."""
    widget.stop_button.native.click()
    pressed = time.monotonic()
    fails = []
    if not wait_until(lambda: widget._worker is None, timeout=30):
        fails.append(f"{label}: Stop did not end the run within 30 s")
    print(f"{label}: Stop answered in {time.monotonic() - pressed:.2f} s: "
          f"{widget.status.value!r}")
    if not expected(widget.status.value):
        fails.append(f"{label} stop: {widget.status.value}")
    return fails


def tour_assistant(viewer, widget, out: str, i: int) -> list[str]:
    """The Restore assistant: analyse a sample, then open its first recommendation's dock (filled
    in by the assistant) and close it again."""
    from napari_ssl_restore._napari.widgets import RestoreWidget

    widget.image.value = viewer.layers[ASSISTANT_LAYER]
    settle(0.2)
    viewer.screenshot(path=f"{out}/dock_{i}_assistant.png", canvas_only=False)
    widget.analyse_button.native.click()
    if not wait_until(lambda: widget._worker is None and widget.report is not None, timeout=300):
        return [f"assistant: no report within 300 s ({widget.status.value})"]
    print(f"assistant: status {widget.status.value!r}, "
          f"{len(widget.rec_buttons)} recommendation(s)")
    settle(0.2)
    viewer.screenshot(path=f"{out}/result_{i}_assistant.png", canvas_only=False)
    if not widget.rec_buttons:
        return ["assistant: no recommendation"]
    before = set(viewer.window.dock_widgets)
    widget.rec_buttons[0].click()
    settle(0.5)
    opened = [viewer.window.dock_widgets[k] for k in set(viewer.window.dock_widgets) - before]
    docks = [w for w in opened if isinstance(w, RestoreWidget)]
    if not docks:
        return ["assistant: its first recommendation opened no method dock"]
    print(f"assistant: opened {docks[0].spec.name} on {docks[0].image.value.name!r}")
    for dock in docks:
        viewer.window.remove_dock_widget(dock)
    return []


def main(out: str) -> int:
    from napari_ssl_restore._napari.assistant import AssistantWidget
    from napari_ssl_restore._napari.widgets import RestoreWidget

    os.makedirs(out, exist_ok=True)
    pm = PluginManager.instance()
    pm.discover()
    mf = pm.get_manifest(PLUGIN)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    fails: list[str] = []
    for sample in mf.contributions.sample_data:
        try:
            viewer.open_sample(PLUGIN, sample.key)
        except Exception as exc:  # noqa: BLE001 - report everything
            fails.append(f"sample {sample.key}: {type(exc).__name__}: {exc}")
    app = get_app_model()
    for i, contribution in enumerate(mf.contributions.widgets):
        name = contribution.display_name
        try:
            app.commands.execute_command(contribution.command).result()  # the menu item
            assistant = next((w for w in viewer.window.dock_widgets.values()
                              if isinstance(w, AssistantWidget)), None)
            if assistant is not None:
                fails += tour_assistant(viewer, assistant, out, i)
                viewer.window.remove_dock_widget(assistant)
                continue
            widget = next(w for w in viewer.window.dock_widgets.values()
                          if isinstance(w, RestoreWidget))  # the one dock of ours open
            method = widget.spec.name
            layer, params, extras = RUNS[method]
            widget.image.value = viewer.layers[layer]
            for key, value in params.items():
                widget.params[key].value = value
            for key, source in extras.items():
                widget.inputs[key].value = viewer.layers[source]
            hint = widget.sizeHint().height()
            settle(0.2)
            viewer.screenshot(path=f"{out}/dock_{i}_{method}.png", canvas_only=False)
            widget.run_button.native.click()
            if not wait_until(lambda: widget._worker is None, timeout=300):
                fails.append(f"{method}: did not finish in 300 s")
            elif not widget.status.value.startswith("done"):
                fails.append(f"{method}: {widget.status.value}")
            elif f"{layer} {method}" not in viewer.layers:
                fails.append(f"{method}: no result layer")
            print(f"{method}: dock height {hint} px, status {widget.status.value!r}")
            settle(0.2)
            viewer.screenshot(path=f"{out}/result_{i}_{method}.png", canvas_only=False)
            if method == "dip":  # a long run, stopped mid-way: the best so far comes back
                widget.params.max_iter.value = 100_000
                widget.params.es_window.value = 10
                widget.params.es_patience.value = 100_000
                widget.run_button.native.click()
                wait_until(lambda: "best@" in widget.status.value, timeout=120)
                fails += press_stop(widget, "dip", lambda status: status.startswith(
                    "stopped: best result so far"))
                fails += dip_stack(viewer, widget, out, i)
            viewer.window.remove_dock_widget(widget)
        except Exception as exc:  # noqa: BLE001 - report everything
            fails.append(f"widget {name}: {type(exc).__name__}: {exc}")
            traceback.print_exc()
    viewer.close()
    print("failures:", "none" if not fails else "")
    for f in fails:
        print("  -", f)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "napari_tour"))
