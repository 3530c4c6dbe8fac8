import numpy as np
import pytest

from napari_ssl_restore.core import axes as A


@pytest.mark.parametrize("shape,rgb,video,expected", [
    ((8, 9), False, False, "YX"),
    ((8, 9, 3), True, False, "YXC"),
    ((4, 8, 9), False, False, "ZYX"),
    ((4, 8, 9), False, True, "TYX"),
    ((2, 4, 8, 9), False, False, "TZYX"),
    ((4, 8, 9, 3), True, True, "TYXC"),
])
def test_infer_axes(shape, rgb, video, expected):
    assert A.infer_axes(shape, rgb=rgb, video=video) == expected


@pytest.mark.parametrize("shape", [(5,), (2, 2, 2, 2, 2), (1, 2, 2, 2, 2, 2)])
def test_infer_axes_rejects_unsupported(shape):
    with pytest.raises(ValueError, match="axes|dimensions"):
        A.infer_axes(shape)


@pytest.mark.parametrize("axes,shape,msg", [
    ("YX", (2, 3, 4), "3 dimensions"),
    ("YQX", (2, 3, 4), "unknown letter"),
    ("YYX", (2, 3, 4), "repeats"),
    ("TZX", (2, 3, 4), "Y and X"),
    ("", (2, 3), "string"),
])
def test_check_axes_errors(axes, shape, msg):
    with pytest.raises(ValueError, match=msg):
        A.check_axes(axes, shape)


@pytest.mark.parametrize("axes", ["YX", "XY", "ZYX", "YXZ", "TZYX", "ZTYX", "YXC", "CYX", "TYXC",
                                  "TCZYX"])
def test_layout_canonical(axes):
    shape = tuple(range(2, 2 + len(axes)))
    layout = A.Layout(axes=A.check_axes(axes, shape), shape=shape)
    assert layout.canonical == "".join(a for a in "TZYXC" if a in axes or a == "C")
    assert layout.leading == "".join(a for a in "TZ" if a in axes)
    assert layout.has_channels == ("C" in axes)
    # planes in and out in every order: tests/test_engine.py


def test_plane_maps_broadcast_and_errors():
    one = np.zeros((4, 5))
    out = A.plane_maps(one, (2, 3, 4, 5, 1), name="mask", hint="fix it.")
    assert out.shape == (6, 4, 5)
    assert A.plane_maps(np.zeros((2, 3, 4, 5)), (2, 3, 4, 5, 1), name="m", hint="").shape == (6, 4, 5)
    with pytest.raises(ValueError, match="mask shape \\(3, 3\\).*fix it"):
        A.plane_maps(np.zeros((3, 3)), (4, 5, 1), name="mask", hint="fix it.")
