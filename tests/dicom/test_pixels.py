"""The grayscale pipeline against the standard's formulas written out here (PS3.3 C.11)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pydicom.dataset import Dataset

from viewer.dicom.image import DicomImage, ImageInfo
from viewer.dicom.pixels import PRESETS, GrayPipeline, Window, default_window, render_color


def linear_voi(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out independently, rounded to the nearest integer."""
    x = np.asarray(x, dtype=np.float64)
    width = max(width, 1.0)
    out = np.empty(x.shape)
    for index, value in np.ndenumerate(x):
        if value <= center - 0.5 - (width - 1) / 2:
            out[index] = 0
        elif value > center - 0.5 + (width - 1) / 2:
            out[index] = 255
        else:
            out[index] = ((value - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.rint(out).astype(np.uint8)


def info_for(dtype: str, *, photometric: str = "MONOCHROME2", slope: float = 1.0, intercept: float = 0.0,
             windows: tuple[Window, ...] = (), bits_stored: int | None = None, function: str = "LINEAR",
             float_pixels: bool = False) -> ImageInfo:
    dt = np.dtype(dtype)
    bits = dt.itemsize * 8
    return ImageInfo(rows=4, columns=4, frames=1, samples_per_pixel=1, bits_allocated=bits,
                     bits_stored=bits_stored or bits, pixel_representation=1 if dt.kind == "i" else 0,
                     photometric=photometric, rescale_slope=slope, rescale_intercept=intercept, windows=windows,
                     voi_lut_function=function, float_pixels=float_pixels)


def test_presets_are_the_contracts_values():
    assert PRESETS == {"CT lung": Window(-600, 1500), "CT bone": Window(400, 1800),
                       "CT brain": Window(40, 80), "CT abdomen": Window(50, 400)}


@pytest.mark.parametrize("window", [Window(40, 400), Window(-600, 1500), Window(0.5, 1), Window(10, 0.2),
                                    Window(1000.25, 3.5), Window(-3000, 2)])
def test_int16_ct_render_matches_the_linear_formula_on_every_value(window):
    info = info_for("int16", slope=1.0, intercept=-1024.0)
    stored = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16).reshape(256, 256)
    out = GrayPipeline(info).render(stored, window)
    expected = linear_voi(stored.astype(np.float64) - 1024.0, window.center, window.width)
    assert out.dtype == np.uint8 and out.flags.c_contiguous and out.shape == stored.shape
    np.testing.assert_array_equal(out, expected)


def test_rescale_slope_and_intercept_are_applied_before_the_window():
    info = info_for("uint16", slope=0.5, intercept=-100.0)
    stored = np.array([[0, 100, 200, 300], [400, 500, 1000, 65535]] * 2, dtype=np.uint16)
    pipeline = GrayPipeline(info)
    np.testing.assert_array_equal(pipeline.render(stored, Window(50, 300)),
                                  linear_voi(stored * 0.5 - 100.0, 50, 300))
    assert pipeline.modality_value(300) == pytest.approx(50.0)
    np.testing.assert_allclose(pipeline.modality_array(stored), stored * 0.5 - 100.0)
    assert pipeline.modality_array(stored).dtype == np.float32


def test_monochrome1_is_inverted_and_the_user_invert_toggles_it():
    stored = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
    window = Window(2048, 4096)
    mono2 = GrayPipeline(info_for("uint16")).render(stored, window)
    mono1 = GrayPipeline(info_for("uint16", photometric="MONOCHROME1")).render(stored, window)
    np.testing.assert_array_equal(mono1, 255 - mono2)
    np.testing.assert_array_equal(GrayPipeline(info_for("uint16", photometric="MONOCHROME1"))
                                  .render(stored, window, invert=True), mono2)
    np.testing.assert_array_equal(GrayPipeline(info_for("uint16")).render(stored, window, invert=True), 255 - mono2)


def test_window_none_uses_the_files_first_window_else_min_max():
    stored = np.array([[10, 20], [30, 110]], dtype=np.uint8)
    with_window = info_for("uint8", windows=(Window(20, 10), Window(60, 100)))
    np.testing.assert_array_equal(GrayPipeline(with_window).render(stored), linear_voi(stored, 20, 10))
    plain = GrayPipeline(info_for("uint8")).render(stored)
    assert plain.min() == 0 and plain.max() == 255  # min/max window spans the frame
    assert default_window(with_window, stored) == Window(20, 10)
    minmax = default_window(info_for("uint8"), stored)
    np.testing.assert_array_equal(linear_voi(stored, minmax.center, minmax.width), plain)


def test_min_max_window_of_signed_data_uses_numeric_order():
    stored = np.array([[-1000, -10], [5, 300]], dtype=np.int16)
    out = GrayPipeline(info_for("int16")).render(stored)
    assert out[0, 0] == 0 and out[1, 1] == 255 and 0 < out[0, 1] < out[1, 0] < 255


def test_min_max_window_ignores_pixel_padding():
    info = dataclasses.replace(info_for("int16", intercept=-1024.0), pixel_padding_value=-2000)
    stored = np.array([[-2000, -2000], [0, 100]], dtype=np.int16)
    window = default_window(info, stored)
    assert window == Window(-1024 + 101 / 2, 101)  # spans 0..100 stored, i.e. -1024..-924 HU
    out = GrayPipeline(info).render(stored)
    assert out[1, 0] == 0 and out[1, 1] == 255


def test_linear_exact_and_sigmoid_functions():
    x = np.arange(-100, 101, dtype=np.int16).reshape(1, -1)
    exact = GrayPipeline(info_for("int16", function="LINEAR_EXACT")).render(x, Window(0, 100))
    expected = np.rint(np.clip(((x - 0.0) / 100 + 0.5) * 255, 0, 255)).astype(np.uint8)
    np.testing.assert_array_equal(exact, expected)
    sigmoid = GrayPipeline(info_for("int16", function="SIGMOID")).render(x, Window(0, 100))
    np.testing.assert_array_equal(sigmoid, np.rint(255 / (1 + np.exp(-4 * x / 100))).astype(np.uint8))


@pytest.mark.parametrize("dtype", ["int32", "uint32", "float32", "float64"])
def test_wide_and_float_data_are_computed_directly_with_the_same_formula(dtype):
    info = info_for(dtype, slope=2.0, intercept=-5.0, float_pixels=dtype.startswith("float"))
    stored = np.array([[-70000, -3, 0, 7], [20, 100, 70000, 3]], dtype=np.float64)
    if dtype.startswith("u"):
        stored = np.abs(stored)
    stored = stored.astype(dtype)
    pipeline = GrayPipeline(info)
    assert not pipeline.uses_table
    out = pipeline.render(stored, Window(30, 200))
    np.testing.assert_array_equal(out, linear_voi(stored.astype(np.float64) * 2 - 5, 30, 200))


def test_non_finite_float_pixels_do_not_break_rendering():
    stored = np.array([[np.nan, np.inf], [-np.inf, 1.0]], dtype=np.float32)
    out = GrayPipeline(info_for("float32", float_pixels=True)).render(stored)
    assert out.dtype == np.uint8 and out[1, 0] == 0 and out[0, 1] == 255


def _lut_item(first_mapped: int, bits: int, values: list[int]) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [len(values), first_mapped, bits]
    item.LUTData = values
    return item


def test_voi_lut_sequence_maps_modality_values_and_scales_to_8_bits():
    # A 12-bit VOI LUT starting at -10: x < -10 -> first entry, beyond the end -> last entry (C.11.2.1.1).
    values = [int(4095 * (k / 99) ** 0.5) for k in range(100)]
    item = _lut_item(-10, 12, values)
    info = info_for("int16", intercept=0.0)
    stored = np.array([[-500, -10, -9, 0], [50, 89, 90, 1000]], dtype=np.int16)
    pipeline = GrayPipeline(info, voi_lut=item)
    index = np.clip(stored.astype(int) + 10, 0, 99)
    expected = np.rint(np.asarray(values)[index] / 4095 * 255).astype(np.uint8)
    np.testing.assert_array_equal(pipeline.render(stored), expected)
    # An explicit window overrides the VOI LUT.
    np.testing.assert_array_equal(pipeline.render(stored, Window(0, 100)), linear_voi(stored, 0, 100))


def test_modality_lut_sequence_replaces_rescale():
    values = [1000 + 3 * k for k in range(256)]
    item = _lut_item(0, 16, values)
    info = info_for("uint8", slope=7.0, intercept=99.0)  # ignored: the Modality LUT wins (C.11.1)
    stored = np.arange(256, dtype=np.uint8).reshape(16, 16)
    pipeline = GrayPipeline(info, modality_lut=item)
    modality = np.asarray(values, dtype=np.float64)[stored]
    np.testing.assert_array_equal(pipeline.render(stored, Window(1300, 400)), linear_voi(modality, 1300, 400))
    assert pipeline.modality_value(10) == 1030.0


def test_voi_lut_read_from_a_file_is_applied(write_image):
    values = list(range(0, 4096, 16))  # 256 entries, 12 bits
    stored = np.arange(-50, 206, dtype=np.int16).reshape(16, 16)
    # As many writers do: descriptor as US (first mapped -20 written as 65516), LUT Data as OW words.
    seq_item = Dataset()
    seq_item.add_new(0x00283002, "US", [len(values), -20 & 0xFFFF, 12])
    seq_item.add_new(0x00283006, "OW", np.asarray(values, dtype="<u2").tobytes())
    path = write_image(stored, VOILUTSequence=[seq_item], PixelRepresentation=1)
    image = DicomImage.open(path)
    assert image.voi_lut is not None
    out = GrayPipeline(image.info, image.voi_lut, image.modality_lut).render(image.frame(0))
    index = np.clip(stored.astype(int) + 20, 0, 255)
    np.testing.assert_array_equal(out, np.rint(np.asarray(values)[index] / 4095 * 255).astype(np.uint8))


def test_table_rebuild_reuses_the_modality_table():
    pipeline = GrayPipeline(info_for("int16", intercept=-1024.0))
    first = pipeline.table(Window(40, 400))
    assert pipeline.table(Window(40, 400)) is first  # cached
    other = pipeline.table(Window(40, 80))
    assert other.shape == (65536,) and not np.array_equal(first, other)
    assert not first.flags.writeable


def test_render_color_window_and_invert():
    rgb = np.arange(0, 256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)
    assert render_color(rgb, None) is not None
    np.testing.assert_array_equal(render_color(rgb, None), rgb)
    np.testing.assert_array_equal(render_color(rgb, None, True), 255 - rgb)
    np.testing.assert_array_equal(render_color(rgb, Window(128, 64)), linear_voi(rgb, 128, 64))
