"""Imaging physics, apart from the framework: the haze model and its estimators (:mod:`.haze`), the
forward operators of restoration through a known model (:mod:`.operators`: PSF blur, downsampling,
the haze operator), camera noise models (:mod:`.noise`) and optical flow (:mod:`.flow`).

Plain numpy/torch functions with no knowledge of the registry, the plane driver or any front end;
like ``core/``, never imports napari, Qt or magicgui.
"""
