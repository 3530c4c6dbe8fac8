"""Qt-free compute core: registry, axes, devices, progress, tiling, normalisation and I/O.

Nothing in this package imports napari, Qt or magicgui (``tests/test_core_qtfree.py`` enforces it),
so the same engine runs in the viewer, a terminal, a notebook or on a cluster.
"""
