"""Volume rendering with VTK: the one module that imports VTK (issue 5).

:class:`VolumeScene` holds the VTK pipeline for one :class:`~viewer.dicom.volume.Volume`:

* the voxels are handed to VTK without a copy (``numpy_to_vtk(..., deep=False)`` over the C-ordered
  ``(slices, rows, columns)`` array, which is VTK's x-fastest order); the scene keeps the array alive;
* the volume is placed in patient space (LPS, mm) by a user matrix built from the volume's geometry, so the
  camera, the crosshair and the MPR planes share one coordinate system;
* presets (CT bone, CT soft tissue, CT lung, MR default, MIP) are colour and opacity transfer functions in
  modality units (HU for CT); :meth:`VolumeScene.shift_transfer` moves and widens them like a window/level drag;
* level of detail: while the user rotates (:meth:`VolumeScene.set_interacting`) the ray caster samples every
  second pixel (``ImageSampleDistance`` 2, adjusted automatically off), then one full-quality frame follows.
  On a CPU (Mesa llvmpipe) this is what makes rotation fluid; measured in benchmarks/render3d.py.

The mapper is VTK's fixed-point CPU ray caster unless a hardware OpenGL renderer is present, in which case the
GPU ray caster is used (``mapper="auto"``).  Offscreen rendering (tests, benchmarks, snapshots) needs no screen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (registers the OpenGL backend)
import vtkmodules.vtkRenderingVolumeOpenGL2  # noqa: F401  (and the volume mappers' implementations)
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonCore import VTK_FLOAT, VTK_SHORT
from vtkmodules.vtkCommonDataModel import vtkImageData, vtkPiecewiseFunction
from vtkmodules.vtkCommonMath import vtkMatrix4x4
from vtkmodules.vtkIOImage import vtkPNGWriter
from vtkmodules.vtkRenderingCore import (
    vtkColorTransferFunction,
    vtkRenderer,
    vtkRenderWindow,
    vtkVolume,
    vtkVolumeProperty,
    vtkWindowToImageFilter,
)
from vtkmodules.vtkRenderingVolume import vtkFixedPointVolumeRayCastMapper, vtkGPUVolumeRayCastMapper

from viewer.dicom.volume import Volume
from viewer.errors import MifasError

PRESETS = ("CT bone", "CT soft tissue", "CT lung", "MR default", "MIP")
INTERACTIVE_SAMPLE_DISTANCE = 2.0  # image pixels per ray while rotating
STILL_SAMPLE_DISTANCE = 1.0
BACKGROUND = (0.0, 0.0, 0.0)


class RenderError(MifasError):
    """The 3D view could not be drawn (no usable OpenGL, a volume VTK cannot take)."""


@dataclass(frozen=True)
class TransferFunction:
    """Colour (value, r, g, b) and opacity (value, alpha) control points in modality units."""

    colors: tuple[tuple[float, float, float, float], ...]
    opacities: tuple[tuple[float, float], ...]
    shade: bool = True
    mip: bool = False

    def shifted(self, center_by: float, width_scale: float, pivot: float) -> TransferFunction:
        """Every control point moved by `center_by` and spread by `width_scale` around `pivot` (a W/L drag)."""
        def move(v: float) -> float:
            return pivot + center_by + (v - pivot) * width_scale
        return TransferFunction(tuple((move(v), r, g, b) for v, r, g, b in self.colors),
                                tuple((move(v), a) for v, a in self.opacities), self.shade, self.mip)


def preset(name: str, data_range: tuple[float, float]) -> TransferFunction:
    """A preset's transfer function; MR default and MIP adapt to the data (5th-99.5th percentile)."""
    lo, hi = data_range
    if name == "CT bone":
        return TransferFunction(((-1000, 0, 0, 0), (150, 0.55, 0.25, 0.15), (300, 0.9, 0.8, 0.6), (1200, 1, 1, 0.95)),
                                ((-1000, 0), (150, 0), (250, 0.25), (600, 0.7), (1500, 0.9)))
    if name == "CT soft tissue":
        return TransferFunction(((-1000, 0, 0, 0), (-100, 0.6, 0.35, 0.25), (40, 0.85, 0.45, 0.35),
                                 (200, 1, 0.85, 0.7), (1000, 1, 1, 1)),
                                ((-1000, 0), (-300, 0), (-50, 0.05), (60, 0.25), (300, 0.45), (1000, 0.7)))
    if name == "CT lung":
        return TransferFunction(((-1000, 0, 0, 0), (-850, 0.55, 0.55, 0.75), (-500, 0.85, 0.75, 0.7), (0, 1, 0.9, 0.8)),
                                ((-1000, 0), (-900, 0.02), (-700, 0.12), (-450, 0.02), (-200, 0)))
    if name == "MR default":
        span = max(hi - lo, 1.0)
        return TransferFunction(((lo, 0, 0, 0), (lo + 0.5 * span, 0.8, 0.7, 0.6), (hi, 1, 1, 1)),
                                ((lo, 0), (lo + 0.15 * span, 0), (lo + 0.6 * span, 0.3), (hi, 0.7)))
    if name == "MIP":
        return TransferFunction(((lo, 0, 0, 0), (hi, 1, 1, 1)), ((lo, 0), (hi, 1)), shade=False, mip=True)
    raise ValueError(f"unknown 3D preset {name!r}; known: {', '.join(PRESETS)}")


def data_range(data: np.ndarray) -> tuple[float, float]:
    """5th and 99.5th percentiles of a strided sample (the volume is not copied)."""
    step = max(1, int(round((data.size / 2_000_000) ** (1 / 3))))
    sample = data[::step, ::step, ::step]
    lo, hi = np.percentile(sample, [5, 99.5])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def hardware_opengl(window: vtkRenderWindow) -> bool:
    """Whether the OpenGL renderer is a GPU (not Mesa's llvmpipe/softpipe)."""
    try:
        info = window.ReportCapabilities() or ""
    except Exception:  # some backends cannot report before the first render
        return False
    text = info.lower()
    return "opengl renderer string" in text and not any(s in text for s in ("llvmpipe", "softpipe", "swrast"))


class VolumeScene:
    """The VTK pipeline of one volume (see the module docstring).  ``window`` may be a QVTK widget's render
    window; without one the scene renders offscreen at `size`."""

    def __init__(self, volume: Volume, *, window: vtkRenderWindow | None = None, size: tuple[int, int] = (512, 512),
                 mapper: str = "auto", shading: bool | None = None) -> None:
        if volume.data.ndim != 3 or not volume.data.flags.c_contiguous:
            raise RenderError("The volume is not a contiguous 3D array.")
        self.volume = volume
        self._array = volume.data  # VTK reads these bytes in place: keep them alive
        kind = {np.dtype(np.int16): VTK_SHORT, np.dtype(np.float32): VTK_FLOAT}.get(volume.data.dtype)
        if kind is None:
            raise RenderError(f"3D rendering takes int16 or float32 volumes, not {volume.data.dtype}.")
        self._scalars = numpy_support.numpy_to_vtk(self._array.reshape(-1), deep=False, array_type=kind)
        nk, nj, ni = volume.data.shape
        image = vtkImageData()
        image.SetDimensions(ni, nj, nk)
        sk, sj, si = volume.geometry.spacing
        image.SetSpacing(si, sj, sk)
        image.SetOrigin(0, 0, 0)
        image.GetPointData().SetScalars(self._scalars)
        self.image = image
        self.window = window or vtkRenderWindow()
        if window is None:
            self.window.SetOffScreenRendering(1)
            self.window.SetSize(*size)
        self.renderer = vtkRenderer()
        self.renderer.SetBackground(*BACKGROUND)
        self.window.AddRenderer(self.renderer)
        self.mapper_kind = self._choose_mapper(mapper)
        if self.mapper_kind == "gpu":
            self.mapper = vtkGPUVolumeRayCastMapper()
        else:
            self.mapper = vtkFixedPointVolumeRayCastMapper()
        self.mapper.SetInputData(image)
        self.mapper.SetAutoAdjustSampleDistances(0)
        self.mapper.SetImageSampleDistance(STILL_SAMPLE_DISTANCE)
        # Shading needs gradients: the GPU mapper computes them in its shader, the CPU ray caster up front (3 s and
        # 1.5 bytes per voxel for a 512x512x300 CT, blocking the GUI thread), so on a CPU it is the user's choice.
        self.shading = (self.mapper_kind == "gpu") if shading is None else bool(shading)
        self.property = vtkVolumeProperty()
        self.property.SetInterpolationTypeToLinear()
        self.actor = vtkVolume()
        self.actor.SetMapper(self.mapper)
        self.actor.SetProperty(self.property)
        self.actor.SetUserMatrix(self._patient_matrix())
        self.renderer.AddVolume(self.actor)
        self.range = data_range(volume.data)
        self.preset_name = ""
        self._base: TransferFunction | None = None
        self.shift = (0.0, 1.0)
        self.set_preset("MR default" if self.range[0] > -500 else "CT bone")
        self.reset_camera()

    def _choose_mapper(self, mapper: str) -> str:
        if mapper in ("cpu", "gpu"):
            return mapper
        if mapper != "auto":
            raise ValueError(f"mapper must be auto, cpu or gpu, not {mapper!r}")
        if os.environ.get("MIFAS_3D_MAPPER") in ("cpu", "gpu"):
            return os.environ["MIFAS_3D_MAPPER"]
        return "gpu" if hardware_opengl(self.window) else "cpu"

    def _patient_matrix(self) -> vtkMatrix4x4:
        g = self.volume.geometry
        m = vtkMatrix4x4()
        for row in range(3):
            m.SetElement(row, 0, g.row_direction[row])
            m.SetElement(row, 1, g.column_direction[row])
            m.SetElement(row, 2, g.normal[row])
            m.SetElement(row, 3, g.origin[row])
        return m

    # -- appearance -------------------------------------------------------------------------------------------

    def set_preset(self, name: str) -> None:
        self._base = preset(name, self.range)
        self.preset_name = name
        self.shift = (0.0, 1.0)
        self._apply(self._base)

    def set_shading(self, shading: bool) -> None:
        """Lighting on the rendered surfaces (see __init__ for its cost on a CPU)."""
        self.shading = bool(shading)
        self._apply(self._current())

    def _current(self) -> TransferFunction:
        assert self._base is not None
        pivot = float(np.mean([v for v, _ in self._base.opacities]))
        return self._base.shifted(self.shift[0], self.shift[1], pivot)

    def shift_transfer(self, center_by: float, width_scale: float = 1.0) -> None:
        """Move the transfer function by `center_by` modality units and spread it by `width_scale` (cumulative
        with earlier shifts): the 3D counterpart of a window/level drag."""
        assert self._base is not None
        center, scale = self.shift
        self.shift = (center + center_by, max(0.05, min(20.0, scale * width_scale)))
        self._apply(self._current())

    def _apply(self, tf: TransferFunction) -> None:
        colors = vtkColorTransferFunction()
        for value, r, g, b in tf.colors:
            colors.AddRGBPoint(value, r, g, b)
        opacity = vtkPiecewiseFunction()
        for value, alpha in tf.opacities:
            opacity.AddPoint(value, alpha)
        self.property.SetColor(colors)
        self.property.SetScalarOpacity(opacity)
        if tf.shade and self.shading:
            self.property.ShadeOn()
            self.property.SetAmbient(0.25)
            self.property.SetDiffuse(0.8)
            self.property.SetSpecular(0.2)
        else:
            self.property.ShadeOff()
        if tf.mip:
            self.mapper.SetBlendModeToMaximumIntensity()
        else:
            self.mapper.SetBlendModeToComposite()

    # -- camera -----------------------------------------------------------------------------------------------

    def reset_camera(self) -> None:
        """Look at the patient from the front (anterior view, head up), the whole volume in view."""
        camera = self.renderer.GetActiveCamera()
        bounds = self.actor.GetBounds()
        centre = [(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2]
        camera.SetFocalPoint(*centre)
        camera.SetPosition(centre[0], centre[1] - 1000.0, centre[2])  # anterior is -y in LPS
        camera.SetViewUp(0, 0, 1)
        self.renderer.ResetCamera()

    def rotate(self, azimuth_deg: float, elevation_deg: float = 0.0) -> None:
        camera = self.renderer.GetActiveCamera()
        camera.Azimuth(azimuth_deg)
        camera.Elevation(elevation_deg)
        camera.OrthogonalizeViewUp()
        self.renderer.ResetCameraClippingRange()

    def zoom(self, factor: float) -> None:
        self.renderer.GetActiveCamera().Zoom(factor)
        self.renderer.ResetCameraClippingRange()

    def pan(self, right_mm: float, up_mm: float) -> None:
        camera = self.renderer.GetActiveCamera()
        view_up = np.array(camera.GetViewUp())
        direction = np.array(camera.GetDirectionOfProjection())
        right = np.cross(direction, view_up)
        move = right * right_mm + view_up * up_mm
        camera.SetFocalPoint(*(np.array(camera.GetFocalPoint()) + move))
        camera.SetPosition(*(np.array(camera.GetPosition()) + move))

    def set_interacting(self, interacting: bool) -> None:
        """Level of detail: coarse rays while the user drags, full quality otherwise."""
        self.mapper.SetImageSampleDistance(INTERACTIVE_SAMPLE_DISTANCE if interacting else STILL_SAMPLE_DISTANCE)

    # -- output -----------------------------------------------------------------------------------------------

    def render(self) -> None:
        self.window.Render()

    def frame(self) -> np.ndarray:
        """The last rendered frame as (height, width, 3) uint8, top row first."""
        grab = vtkWindowToImageFilter()
        grab.SetInput(self.window)
        grab.SetInputBufferTypeToRGB()
        grab.ReadFrontBufferOff()
        grab.Update()
        out = grab.GetOutput()
        width, height, _ = out.GetDimensions()
        pixels = numpy_support.vtk_to_numpy(out.GetPointData().GetScalars()).reshape(height, width, 3)
        return pixels[::-1].copy()

    def snapshot(self, path: Path | str) -> Path:
        """Render at full quality and write a PNG."""
        path = Path(path)
        self.set_interacting(False)
        self.render()
        grab = vtkWindowToImageFilter()
        grab.SetInput(self.window)
        grab.SetInputBufferTypeToRGB()
        grab.ReadFrontBufferOff()
        grab.Update()
        writer = vtkPNGWriter()
        writer.SetFileName(str(path))
        writer.SetInputConnection(grab.GetOutputPort())
        writer.Write()
        if not path.exists() or path.stat().st_size == 0:
            raise RenderError(f"The snapshot could not be written to {path}.")
        return path

    def close(self) -> None:
        self.renderer.RemoveAllViewProps()
        self.window.RemoveRenderer(self.renderer)
        self.window.Finalize()
