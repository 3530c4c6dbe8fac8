"""The napari front end: the only sub-package that imports napari, Qt or magicgui."""
