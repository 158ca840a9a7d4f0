"""DICOM decoding, the grayscale display pipeline, series ordering and demo data (no Qt).

    image   DicomImage, read_header                            one file -> stored pixel values
    info    ImageInfo, image_info, check_image_size, lut_items  a header -> image facts, size limit, LUT items
    decode  codestream_size                                    pixel data -> arrays (native, compressed, colour)
    pixels  Window, PRESETS, GrayPipeline, default_window, render_color   stored values -> display uint8
    series  FrameRef, order_frames, priority_order, SeriesImages   a series, decoded lazily and bounded
    tags    TagRow, tag_rows                                   a header as rows for the tag browser
    calibration  Scale, header_scale, effective_scale, calibrate   the scale measurements use, and where its mm are
    cine    FrameTiming, frame_timing, series_timing, CineClock   frame timing from headers; which frame is due
    demo    demo_datasets, ct_series_datasets                  synthetic CT, no patient data
"""

from .image import DicomImage, read_header
from .info import IMAGE_BYTES_MAX, ImageInfo, check_image_size, image_info, transfer_syntax_words
from .pixels import PRESETS, GrayPipeline, Window, default_window, render_color
from .series import FrameRef, SeriesImages, order_frames, priority_order
from .tags import TagRow, tag_rows

__all__ = [
    "IMAGE_BYTES_MAX",
    "PRESETS",
    "DicomImage",
    "FrameRef",
    "GrayPipeline",
    "ImageInfo",
    "SeriesImages",
    "TagRow",
    "Window",
    "check_image_size",
    "default_window",
    "image_info",
    "order_frames",
    "priority_order",
    "read_header",
    "render_color",
    "tag_rows",
    "transfer_syntax_words",
]
