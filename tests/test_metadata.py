"""Physical pixel sizes and time steps kept from the input file to the outputs (issue: metadata end
to end): read from OME-TIFF, ImageJ TIFF, our TIFFs and OME-Zarr; written into OME-Zarr's scale
transformation and units and our TIFFs' metadata (and resolution tags)."""
import numpy as np
import pytest
import tifffile
import zarr

from napari_ssl_restore.cli import main
from napari_ssl_restore.core.io import read_scale, unit_name, zoomed_scale

UM = "micrometer"


def _ome_tiff(path, shape=(3, 32, 32)):
    data = (1000 + 100 * np.random.default_rng(0).standard_normal(shape)).astype(np.uint16)
    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "TYX", "PhysicalSizeX": 0.1625, "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": 0.1625, "PhysicalSizeYUnit": "µm", "TimeIncrement": 2.0,
        "TimeIncrementUnit": "s"})
    return path


def test_units_and_zoom():
    assert unit_name("µm") == unit_name("\u03bcm") == unit_name("um") == UM
    assert unit_name("micrometer") == UM and unit_name("s") == "second"
    assert unit_name("furlong") is None and unit_name(None) is None
    z = zoomed_scale({"X": {"size": 0.4, "unit": UM}, "T": {"size": 2.0, "unit": "second"}}, 4)
    assert z == {"X": {"size": 0.1, "unit": UM}, "T": {"size": 2.0, "unit": "second"}}


def test_scale_read_from_ome_and_imagej_tiffs(tmp_path):
    ome = _ome_tiff(tmp_path / "a.ome.tif")
    assert read_scale(ome, "TYX") == {"T": {"size": 2.0, "unit": "second"},
                                      "Y": {"size": 0.1625, "unit": UM},
                                      "X": {"size": 0.1625, "unit": UM}}
    assert set(read_scale(ome, "YX")) == {"Y", "X"}  # only the axes asked for
    ij = tmp_path / "ij.tif"
    tifffile.imwrite(ij, np.zeros((2, 3, 16, 16), np.uint16), imagej=True,
                     resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"axes": "TZYX", "spacing": 0.5, "unit": "um", "finterval": 5.0})
    got = read_scale(ij, "TZYX")
    assert got["Z"] == {"size": 0.5, "unit": UM} and got["T"] == {"size": 5.0, "unit": "second"}
    assert got["X"]["size"] == pytest.approx(0.25) and got["X"]["unit"] == UM
    plain = tmp_path / "plain.tif"  # a plain TIFF's default resolution is not a pixel size
    tifffile.imwrite(plain, np.zeros((16, 16), np.uint8), resolution=(72, 72),
                     resolutionunit="INCH")
    assert read_scale(plain, "YX") == {}
    assert read_scale(tmp_path / "missing.tif", "YX") == {}  # unknown, not an error


def test_ome_tiff_pixel_size_reaches_ome_zarr_and_tiff_outputs(tmp_path):
    """The issue's check: an OME-TIFF with PhysicalSizeX/Y 0.1625 µm restored to OME-Zarr carries
    0.1625 in its multiscales scale (and the time step, with units); a TIFF output keeps them too,
    and reads back."""
    src = _ome_tiff(tmp_path / "movie.ome.tif")
    out = tmp_path / "out.ome.zarr"
    assert main(["run", "dncnn", str(src), "-o", str(out)]) == 0
    ms = zarr.open_group(str(out), mode="r").attrs["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.0, 0.1625, 0.1625]
    assert [a.get("unit") for a in ms["axes"]] == ["second", UM, UM]
    assert read_scale(out, "TYX") == read_scale(src, "TYX")
    tif = tmp_path / "out.tif"
    assert main(["run", "dncnn", str(src), "-o", str(tif)]) == 0
    assert read_scale(tif, "TYX") == read_scale(src, "TYX")
    with tifffile.TiffFile(tif) as t:  # resolution tags for readers that know only those
        assert t.pages[0].resolution[0] == pytest.approx(1e4 / 0.1625)
        assert t.shaped_metadata[0]["napari_ssl_restore"]["scale"]["X"]["size"] == 0.1625


# --- microscope formats through bioio (the [formats] extra) ---------------------------------------

def _czi(path, frames=3, shape=(32, 40)):
    czi = pytest.importorskip("pylibCZIrw.czi")
    rng = np.random.default_rng(0)
    with czi.create_czi(str(path), exist_ok=True) as w:
        for t in range(frames):
            w.write((1000 + 50 * rng.standard_normal(shape)).astype(np.uint16),
                    plane={"T": t, "C": 0, "Z": 0})
        w.write_metadata(scale_x=0.1625e-6, scale_y=0.1625e-6)  # metres
    return path


def test_czi_opens_lazily_through_bioio_with_its_pixel_size(tmp_path):
    """A CZI written here (pylibCZIrw, which bioio-czi reads with) opens through the one reader:
    lazy, axes from its metadata (singleton C and Z dropped), pixel size kept to the output."""
    pytest.importorskip("bioio_czi")
    from napari_ssl_restore.core.io import open_image

    path = _czi(tmp_path / "movie.czi")
    data, axes = open_image(path)
    assert axes == "TYX" and data.shape == (3, 32, 40) and hasattr(data, "compute")
    assert read_scale(path, axes) == {"Y": {"size": pytest.approx(0.1625), "unit": UM},
                                      "X": {"size": pytest.approx(0.1625), "unit": UM}}
    out = tmp_path / "out.ome.zarr"
    assert main(["run", "dncnn", str(path), "-o", str(out)]) == 0
    ms = zarr.open_group(str(out), mode="r").attrs["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == pytest.approx(
        [1.0, 0.1625, 0.1625])
    assert zarr.open_group(str(out), mode="r")["0"].shape == (3, 32, 40)


def test_bioio_reads_what_this_plugin_reads_directly(tmp_path):
    """The same OME-TIFF through bioio (bioio-ome-tiff) and through tifffile: same planes, axes."""
    pytest.importorskip("bioio_ome_tiff")
    from napari_ssl_restore.core.io import open_bioio, read_image

    src = _ome_tiff(tmp_path / "a.ome.tif")
    data, axes = open_bioio(src)
    direct, direct_axes = read_image(src)
    assert axes == direct_axes == "TYX"
    np.testing.assert_array_equal(np.asarray(data), direct)


def test_a_format_without_its_reader_names_the_extra(tmp_path, monkeypatch):
    import sys

    from napari_ssl_restore.core.io import open_image

    fake = tmp_path / "scan.nd2"
    fake.write_bytes(b"not really an nd2 file")
    monkeypatch.setitem(sys.modules, "bioio", None)  # as if the extra were not installed
    with pytest.raises(ValueError, match=r"napari-ssl-restore\[formats\]"):
        open_image(fake)
    monkeypatch.undo()
    pytest.importorskip("bioio")
    with pytest.raises(ValueError, match=r"no installed bioio reader.*\[formats\]"):
        open_image(fake)
