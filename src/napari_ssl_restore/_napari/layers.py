"""What a run adds to the viewer: live previews (one layer per named preview, updated in place),
the results as layers named ``"<input> <method>"`` with the input's scale and translate and the
provenance in ``layer.metadata["napari_ssl_restore"]``, the run's quality verdict and, on request,
its residual ``input − output`` as a layer, and a trained model kept for 'apply' runs."""
from __future__ import annotations

import numpy as np

from ..core.io import PROVENANCE_KEY


class LayerOutputs:
    """Mixed into :class:`~napari_ssl_restore._napari.widgets.RestoreWidget` (which has the
    ``viewer``, ``spec``, ``image``, ``params`` and the ``_previews``/``_live`` run state)."""

    def _show_preview(self, preview) -> None:
        """Show each named preview in its own layer, created once and then updated in place.

        Adding a layer lets napari process events, and with them possibly the end of the run: a
        preview arriving once the run has ended is dropped, and one whose layer was being added
        when it ended is removed again.
        """
        if not self._live:
            return
        layer = self.image.value
        base = f"{layer.name if layer is not None else ''} {self.spec.name} preview"
        items = preview.items() if isinstance(preview, dict) else [("", preview)]
        for key, value in items:
            data = np.asarray(value)
            if data.ndim >= 3 and data.shape[-1] == 1:
                data = data[..., 0]
            rgb = data.ndim >= 3 and data.shape[-1] in (3, 4)
            current = self._previews.get(key)
            if current is None or current not in self.viewer.layers \
                    or current.data.shape != data.shape:
                if current is not None and current in self.viewer.layers:
                    self.viewer.layers.remove(current)
                name = f"{base} {key}".strip()
                kw = {}
                if layer is not None and data.shape == np.shape(layer.data):
                    # a preview of the whole stack (video methods): overlay it on the input
                    kw = {"scale": layer.scale, "translate": layer.translate}
                new = self.viewer.add_image(data, name=name, rgb=rgb, **kw)
                if not self._live:  # the run ended while the layer was being added
                    self.viewer.layers.remove(new)
                    return
                self._previews[key] = new
            else:
                current.data = data

    def _remove_preview(self) -> None:
        for layer in self._previews.values():
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._previews = {}

    def _add_layers(self, result: dict, layer, job) -> list:
        prov = result["provenance"]
        meta = {PROVENANCE_KEY: dict(prov, input_layer=layer.name)}
        axes = job.layout.axes
        scale, translate = np.asarray(layer.scale, float), np.asarray(layer.translate, float)
        zoom = float(prov.get("zoom", 1) or 1)
        if zoom != 1:  # super-resolution: finer pixels over the same field of view
            dims = [a for a in axes if not (a == "C" and getattr(layer, "rgb", False))]
            scale, translate = scale.copy(), translate.copy()
            for a in "YX":
                i = dims.index(a)
                translate[i] += scale[i] * (0.5 / zoom - 0.5)
                scale[i] /= zoom
        added = []
        primary = prov.get("primary_output", self.spec.primary.name)
        for out in self.spec.outputs:
            if not out.layer or out.name not in result:
                continue
            data = result[out.name]
            if not isinstance(data, np.ndarray):  # a zarr store on disk: a lazy layer
                import dask.array as da

                data = da.from_zarr(data)
            name = f"{layer.name} {self.spec.name}"
            if out.name != primary:
                name += f" {out.name}"
            sc, tr = scale, translate
            if out.kind != "image" and "C" in axes and not getattr(layer, "rgb", False):
                keep = [i for i, a in enumerate(axes) if a != "C"]
                sc, tr = scale[keep], translate[keep]
            if out.kind == "labels":
                new = self.viewer.add_labels(data, name=name, scale=sc, translate=tr, metadata=meta)
            elif out.kind == "image":
                kw = {"rgb": getattr(layer, "rgb", False)}
                if not kw["rgb"]:
                    kw["colormap"] = layer.colormap.name
                new = self.viewer.add_image(data, name=name, scale=sc, translate=tr,
                                            metadata=meta, **kw)
            else:
                new = self.viewer.add_image(data, name=name, scale=sc, translate=tr,
                                            metadata=meta, colormap="magma",
                                            contrast_limits=(0.0, 1.0), visible=False)
            added.append(new)
        return added

    def _show_quality(self, result: dict, layer) -> None:
        """The run's quality verdict in its label; "Add residual" enabled when the primary
        output has the input's shape (super-resolution and other shapes: disabled)."""
        prov = result["provenance"]
        quality = prov.get("quality") or {}
        self.quality.value = f"quality: {quality['verdict']}" if quality.get("verdict") else ""
        self.quality.visible = bool(self.quality.value)
        output = result.get(prov.get("primary_output", self.spec.primary.name))
        same = output is not None and tuple(np.shape(output)) == tuple(np.shape(layer.data))
        self._residual_of = (layer, output, prov) if same else None
        self.residual_button.enabled = same

    def add_residual(self):
        """Add ``input − output`` of the last run as a float32 layer named ``"<input> <method>
        input-output"`` over the input (lazy, with dask, when either is not in memory); returns
        it, or None when there is no residual to add."""
        of = self._residual_of
        if of is None:
            return None
        layer, output, prov = of
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        if isinstance(data, np.ndarray) and isinstance(output, np.ndarray):
            residual = np.subtract(data, output, dtype=np.float32)
        else:
            import dask.array as da

            lazy_out = da.from_zarr(output) if type(output).__module__.startswith("zarr") \
                else da.asarray(output)
            residual = da.asarray(data).astype(np.float32) - lazy_out.astype(np.float32)
        scale, translate = list(layer.scale), list(layer.translate)
        if getattr(layer, "rgb", False):  # signed values: channels as an axis, not colours
            scale, translate = scale + [1.0], translate + [0.0]
        meta = {PROVENANCE_KEY: dict(prov, input_layer=layer.name, output="input - output")}
        return self.viewer.add_image(residual, name=f"{layer.name} {self.spec.name} input-output",
                                     scale=scale, translate=translate, metadata=meta,
                                     rgb=False)

    def _keep_model(self, result: dict, layer) -> str | None:
        """Keep a trained model (saved where asked, else in a temporary folder) for 'apply' runs."""
        ckpt = result.get("model")
        if ckpt is None or result["provenance"].get("params", {}).get("mode") != "train":
            return None
        import os
        import tempfile
        import time

        from ..core.models import save_model

        path = result["provenance"].get("model_saved")
        if not path:
            folder = os.path.join(tempfile.gettempdir(), "napari-ssl-restore-models")
            os.makedirs(folder, exist_ok=True)
            safe = "".join(ch if ch.isalnum() else "_" for ch in layer.name)
            path = save_model(ckpt, os.path.join(
                folder, f"{self.spec.name}-{safe}-{time.strftime('%Y%m%d-%H%M%S')}.pt"))
        if "model" in self.params:
            self.params.model.value = path
        if "mode" in self.params:
            self.params.mode.value = "apply"
        return path
