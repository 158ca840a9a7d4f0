"""Generated images for the calibration and cine tests (and benchmarks/cine.py): a DX radiograph with an object of
known size drawn in its pixels, an ultrasound image with regions, and a multi-frame cine loop.  No patient data."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
US_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"  # Ultrasound Image Storage
US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage

IMAGER_SPACING_MM = 0.2
MAGNIFICATION = 1.15
OBJECT_MM = 100.0  # the object's true length, in the patient
OBJECT_PX = round(OBJECT_MM * MAGNIFICATION / IMAGER_SPACING_MM)  # its shadow at the detector: 575 px
DX_SIZE = 640
OBJECT_ROW = 320
OBJECT_COL0 = 30  # the first column of the object's shadow
OBJECT_VALUE = 3000


def _base(sop_class: str, modality: str, rows: int, cols: int, *, frames: int = 1,
          series_uid: str | None = None) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName = "Calibration^Phantom"
    ds.PatientID = "PHANTOM-1"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = rows, cols
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds


def dx_pixels() -> np.ndarray:
    """A dark plate with one bright horizontal bar: the shadow of a 100 mm rod magnified 1.15x (575 px)."""
    pixels = np.full((DX_SIZE, DX_SIZE), 200, dtype=np.uint16)
    pixels[OBJECT_ROW - 3:OBJECT_ROW + 4, OBJECT_COL0:OBJECT_COL0 + OBJECT_PX] = OBJECT_VALUE
    return pixels


def dx_dataset(*, magnification: float | None = MAGNIFICATION, pixel_spacing=None,
               calibration_type: str | None = None) -> FileDataset:
    """A DX image with Imager Pixel Spacing 0.2 mm and (optionally) Estimated Radiographic Magnification Factor."""
    ds = _base(DX_STORAGE, "DX", DX_SIZE, DX_SIZE)
    ds.ImagerPixelSpacing = [IMAGER_SPACING_MM, IMAGER_SPACING_MM]
    if magnification is not None:
        ds.EstimatedRadiographicMagnificationFactor = magnification
    if pixel_spacing is not None:
        ds.PixelSpacing = list(pixel_spacing)
    if calibration_type is not None:
        ds.PixelSpacingCalibrationType = calibration_type
        ds.PixelSpacingCalibrationDescription = "test"
    ds.WindowCenter, ds.WindowWidth = 1600, 3200
    ds.PixelData = dx_pixels().tobytes()
    return ds


def object_ends() -> tuple[tuple[float, float], tuple[float, float]]:
    """The rod's two ends found in the pixels (outer edges of the first and last bright pixel), image (row, col)."""
    row = dx_pixels()[OBJECT_ROW]
    bright = np.nonzero(row > OBJECT_VALUE // 2)[0]
    return (float(OBJECT_ROW), bright[0] - 0.5), (float(OBJECT_ROW), bright[-1] + 0.5)


def us_region(x0: int, y0: int, x1: int, y1: int, delta_cm: float, units: int = 3) -> Dataset:
    item = Dataset()
    item.RegionSpatialFormat = 1  # 2D
    item.RegionDataType = 1  # tissue
    item.RegionFlags = 0
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
    item.PhysicalUnitsXDirection = units
    item.PhysicalUnitsYDirection = units
    item.PhysicalDeltaX = delta_cm
    item.PhysicalDeltaY = -delta_cm  # negative: the axis runs upwards (seen in real files)
    return item


def us_dataset() -> FileDataset:
    """A 200x300 ultrasound image: a 2D region (0.01 cm = 0.1 mm per pixel) at columns 10-149, rows 20-179, and a
    Doppler strip in seconds at columns 160-289."""
    ds = _base(US_STORAGE, "US", 200, 300)
    ds.BitsStored, ds.HighBit, ds.BitsAllocated = 8, 7, 8
    ds.SequenceOfUltrasoundRegions = Sequence([us_region(10, 20, 149, 179, 0.01),
                                               us_region(160, 20, 289, 179, 0.005, units=4)])
    ds.PixelData = np.zeros((200, 300), dtype=np.uint8).tobytes()
    return ds


def cine_dataset(frames: int = 90, size: int = 256, *, frame_time: float | None = 1000.0 / 30,
                 vector: list[float] | None = None, series_uid: str | None = None) -> FileDataset:
    """A multi-frame ultrasound loop: a bright square that moves one step per frame, so every frame differs."""
    ds = _base(US_MULTIFRAME_STORAGE, "US", size, size, frames=frames, series_uid=series_uid)
    ds.BitsStored, ds.HighBit, ds.BitsAllocated = 8, 7, 8
    ds.PixelSpacing = [0.3, 0.3]
    if frame_time is not None:
        ds.FrameTime = round(frame_time, 4)
        ds.FrameIncrementPointer = 0x00181063
    if vector is not None:
        ds.FrameTimeVector = vector
        ds.FrameIncrementPointer = 0x00181065
    pixels = np.full((frames, size, size), 20, dtype=np.uint8)
    side = max(4, size // 8)
    for i in range(frames):
        x = (i * 3) % (size - side)
        pixels[i, size // 2 - side // 2: size // 2 + side // 2, x:x + side] = 230
    ds.PixelData = pixels.tobytes()
    return ds
