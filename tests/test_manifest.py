"""napari.yaml: valid, shipped inside the package, and in step with the registry."""
from pathlib import Path

import pytest
import yaml

import napari_ssl_restore
from napari_ssl_restore.core.registry import list_methods

PKG_YAML = Path(napari_ssl_restore.__file__).parent / "napari.yaml"
EXTRA_WIDGETS = {"napari-ssl-restore.make_assistant_widget":
                 "napari_ssl_restore._napari.assistant:AssistantWidget"}
"""Widgets beside the one per method: command id -> the class it names."""


def test_manifest_inside_package_and_at_repo_root():
    assert PKG_YAML.is_file()
    root = Path(__file__).resolve().parents[1] / "napari.yaml"
    if root.exists():
        assert root.read_text() == PKG_YAML.read_text()


def test_npe2_validate():
    npe2 = pytest.importorskip("npe2")
    pm = npe2.PluginManifest.from_distribution("napari-ssl-restore")
    pm.validate_imports()
    assert pm.name == "napari-ssl-restore"


def test_one_widget_class_per_method():
    """napari hands the viewer only to widget classes: each method's command names its class."""
    manifest = yaml.safe_load(PKG_YAML.read_text())
    commands = {c["id"]: c["python_name"] for c in manifest["contributions"]["commands"]}
    widgets = [w["command"] for w in manifest["contributions"]["widgets"]]
    expected = [f"napari-ssl-restore.make_{m.replace('-', '_')}_widget" for m in list_methods()]
    assert sorted(w for w in widgets if w not in EXTRA_WIDGETS) == sorted(expected)
    for command, python_name in EXTRA_WIDGETS.items():  # docks that are not a method's
        assert command in widgets and commands[command] == python_name
    for method in list_methods():
        command = f"napari-ssl-restore.make_{method.replace('-', '_')}_widget"
        # the class name is written out here, not derived, so a rename is caught
        name = "".join(part.capitalize() for part in method.split("-")) + "Widget"
        assert commands[command] == f"napari_ssl_restore._napari.widgets:{name}"
    assert len(manifest["contributions"]["sample_data"]) >= 2
