"""Multiplanar reformatting: axial, coronal and sagittal planes of a :class:`~viewer.dicom.volume.Volume` through a
crosshair point, with optional thick slabs (MIP, MinIP, average).  Pure numpy, no Qt.

Screen conventions (radiological, LPS patient coordinates):

    plane      screen right      screen down     looking along
    axial      +x (patient L)    +y (posterior)  +z  (from the feet)
    coronal    +x (patient L)    -z (inferior)   +y  (from the front)
    sagittal   +y (posterior)    -z (inferior)   -x  (from the patient's left... anterior on the left)

A plane image is sampled on a grid whose columns run along "screen right" and rows along "screen down", with a
pixel spacing (row, column) in mm that the view uses for the physical aspect.  When the volume's axes line up with
the patient axes (an ordinary axial, coronal or sagittal acquisition, any flips), a plane is a slice of the array,
transposed and flipped, with no interpolation: fast enough to update three planes on every mouse move.  Oblique
volumes are resampled (trilinear) on an isotropic grid of the volume's finest spacing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from viewer.dicom.volume import Volume

PLANES = ("axial", "coronal", "sagittal")
SCREEN_AXES = {  # plane -> (screen right, screen down) in patient coordinates
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}
PLANE_NORMALS = {plane: np.cross(*[np.asarray(v) for v in axes]) for plane, axes in SCREEN_AXES.items()}
SLAB_MODES = ("mip", "minip", "mean")
ALIGN_TOLERANCE = 1e-3  # |direction cosine| within this of 1 counts as "along a patient axis"
SLAB_MM_MAX = 200.0
OBLIQUE_PIXELS_MAX = 1024  # per side of a resampled plane


@dataclass(frozen=True)
class PlaneImage:
    """One reformatted plane: ``data`` (rows, columns) in modality units; ``origin`` the patient point of pixel
    (0, 0); ``right`` / ``down`` the unit vectors of increasing column / row; ``spacing`` (row, column) in mm;
    ``crosshair`` the crosshair's (row, column), fractional."""

    plane: str
    data: np.ndarray
    origin: np.ndarray
    right: np.ndarray
    down: np.ndarray
    spacing: tuple[float, float]
    crosshair: tuple[float, float]

    def to_patient(self, row: float, column: float) -> np.ndarray:
        return self.origin + self.right * column * self.spacing[1] + self.down * row * self.spacing[0]


class Mpr:
    """Three planes of one volume through a crosshair.  Not thread-safe (one per view)."""

    def __init__(self, volume: Volume) -> None:
        self.volume = volume
        g = volume.geometry
        self._axes = np.array([g.normal, g.column_direction, g.row_direction])  # array axis (k, j, i) -> patient
        self._aligned = self._axis_map() if self._is_aligned() else None
        self.crosshair = g.to_patient([(n - 1) / 2 for n in g.shape])

    # -- geometry -------------------------------------------------------------------------------------------

    def _is_aligned(self) -> bool:
        return bool(np.all((np.abs(self._axes) < ALIGN_TOLERANCE) | (np.abs(np.abs(self._axes) - 1) < ALIGN_TOLERANCE)))

    def _axis_map(self) -> dict[int, tuple[int, int]]:
        """Patient axis (0=x, 1=y, 2=z) -> (array axis, sign) for an aligned volume."""
        out = {}
        for array_axis in range(3):
            patient_axis = int(np.argmax(np.abs(self._axes[array_axis])))
            out[patient_axis] = (array_axis, int(np.sign(self._axes[array_axis][patient_axis])))
        return out

    @property
    def aligned(self) -> bool:
        return self._aligned is not None

    def set_crosshair(self, point) -> None:
        """Move the crosshair (patient mm), clamped into the volume."""
        g = self.volume.geometry
        kji = np.clip(g.to_index(point), 0, np.array(g.shape) - 1)
        self.crosshair = g.to_patient(kji)

    def step_mm(self, plane: str) -> float:
        """The scroll step of `plane`: the volume's spacing along the plane's normal (finest spacing if oblique)."""
        normal = PLANE_NORMALS[plane]
        if self._aligned is not None:
            array_axis, _ = self._aligned[int(np.argmax(np.abs(normal)))]
            return float(self.volume.geometry.spacing[array_axis])
        return float(min(self.volume.geometry.spacing))

    def scroll(self, plane: str, steps: int) -> None:
        """Move the crosshair `steps` slices along `plane`'s viewing direction."""
        normal = PLANE_NORMALS[plane]
        self.set_crosshair(self.crosshair + normal * self.step_mm(plane) * steps)

    # -- planes ---------------------------------------------------------------------------------------------

    def plane(self, plane: str, *, slab_mm: float = 0.0, mode: str = "mip") -> PlaneImage:
        if plane not in SCREEN_AXES:
            raise ValueError(f"unknown plane {plane!r}; use one of {', '.join(PLANES)}")
        if mode not in SLAB_MODES:
            raise ValueError(f"unknown slab mode {mode!r}; use one of {', '.join(SLAB_MODES)}")
        slab_mm = min(max(float(slab_mm), 0.0), SLAB_MM_MAX)
        if self._aligned is not None:
            return self._aligned_plane(plane, slab_mm, mode)
        return self._oblique_plane(plane, slab_mm, mode)

    def planes(self, **kw) -> dict[str, PlaneImage]:
        return {p: self.plane(p, **kw) for p in PLANES}

    def _aligned_plane(self, plane: str, slab_mm: float, mode: str) -> PlaneImage:
        assert self._aligned is not None
        g = self.volume.geometry
        right, down = (np.asarray(v) for v in SCREEN_AXES[plane])
        normal = np.cross(right, down)
        axis_r, sign_r = self._aligned[int(np.argmax(np.abs(right)))]
        axis_d, sign_d = self._aligned[int(np.argmax(np.abs(down)))]
        axis_n, _ = self._aligned[int(np.argmax(np.abs(normal)))]
        # the screen axis may point against the array axis: flip; its sign in `right`/`down` matters too
        flip_r = sign_r * int(np.sign(right[np.argmax(np.abs(right))])) < 0
        flip_d = sign_d * int(np.sign(down[np.argmax(np.abs(down))])) < 0
        centre = g.to_index(self.crosshair)
        index_n = int(np.clip(np.rint(centre[axis_n]), 0, g.shape[axis_n] - 1))
        half = int(round(slab_mm / 2 / g.spacing[axis_n]))
        lo, hi = max(index_n - half, 0), min(index_n + half, g.shape[axis_n] - 1)
        block = np.take(self.volume.data, range(lo, hi + 1), axis=axis_n)
        if hi > lo:
            block = {"mip": np.max, "minip": np.min, "mean": np.mean}[mode](block, axis=axis_n, keepdims=True)
        image = np.take(block, 0, axis=axis_n)  # 2D, remaining axes in array order
        remaining = [a for a in range(3) if a != axis_n]
        if remaining.index(axis_d) != 0:
            image = image.T
        if flip_d:
            image = image[::-1]
        if flip_r:
            image = image[:, ::-1]
        spacing = (float(g.spacing[axis_d]), float(g.spacing[axis_r]))
        # pixel (0, 0): the corner voxel on the crosshair's plane
        corner = centre.copy()
        corner[axis_n] = index_n
        corner[axis_d] = g.shape[axis_d] - 1 if flip_d else 0
        corner[axis_r] = g.shape[axis_r] - 1 if flip_r else 0
        origin = g.to_patient(corner)
        cross = ((centre[axis_d] if not flip_d else g.shape[axis_d] - 1 - centre[axis_d]),
                 (centre[axis_r] if not flip_r else g.shape[axis_r] - 1 - centre[axis_r]))
        return PlaneImage(plane, np.ascontiguousarray(image), origin, right.astype(float), down.astype(float),
                          spacing, (float(cross[0]), float(cross[1])))

    def _oblique_plane(self, plane: str, slab_mm: float, mode: str) -> PlaneImage:
        g = self.volume.geometry
        right, down = (np.asarray(v, dtype=float) for v in SCREEN_AXES[plane])
        normal = np.cross(right, down)
        step = float(min(g.spacing))
        corners = np.array([g.to_patient((k, j, i)) for k in (0, g.shape[0] - 1) for j in (0, g.shape[1] - 1)
                            for i in (0, g.shape[2] - 1)])
        rel = corners - self.crosshair
        r_lo, r_hi = (rel @ right).min(), (rel @ right).max()
        d_lo, d_hi = (rel @ down).min(), (rel @ down).max()
        step = max(step, max(r_hi - r_lo, d_hi - d_lo) / OBLIQUE_PIXELS_MAX)
        cols = np.arange(r_lo, r_hi + step / 2, step)
        rows = np.arange(d_lo, d_hi + step / 2, step)
        offsets = [0.0]
        if slab_mm > 0:
            half = slab_mm / 2
            offsets = list(np.arange(-half, half + step / 2, step))
        samples = []
        for offset in offsets:
            points = (self.crosshair + normal * offset)[None, None, :] + rows[:, None, None] * down + \
                cols[None, :, None] * right
            samples.append(_trilinear(self.volume, points))
        stack = np.stack(samples)
        image = stack[0] if len(samples) == 1 else {"mip": np.nanmax, "minip": np.nanmin, "mean": np.nanmean}[mode](stack, axis=0)
        fill = float(np.min(self.volume.data))
        image = np.where(np.isnan(image), fill, image).astype(np.float32)
        origin = self.crosshair + right * cols[0] + down * rows[0]
        cross = (float(-rows[0] / step), float(-cols[0] / step))
        return PlaneImage(plane, image, origin, right, down, (step, step), cross)


def _trilinear(volume: Volume, points: np.ndarray) -> np.ndarray:
    """Sample the volume at patient points (..., 3) by trilinear interpolation; NaN outside."""
    g = volume.geometry
    inverse = np.linalg.inv(g.matrix())
    flat = points.reshape(-1, 3)
    ijk = flat @ inverse[:3, :3].T + inverse[:3, 3]
    i, j, k = ijk[:, 0], ijk[:, 1], ijk[:, 2]
    nk, nj, ni = g.shape
    inside = (i >= 0) & (i <= ni - 1) & (j >= 0) & (j <= nj - 1) & (k >= 0) & (k <= nk - 1)
    i0 = np.clip(np.floor(i).astype(np.int64), 0, max(ni - 2, 0))
    j0 = np.clip(np.floor(j).astype(np.int64), 0, max(nj - 2, 0))
    k0 = np.clip(np.floor(k).astype(np.int64), 0, max(nk - 2, 0))
    fi, fj, fk = (i - i0).astype(np.float32), (j - j0).astype(np.float32), (k - k0).astype(np.float32)
    d = volume.data
    out = np.zeros(len(flat), dtype=np.float32)
    for dk in (0, 1):
        wk = fk if dk else 1 - fk
        for dj in (0, 1):
            wj = fj if dj else 1 - fj
            for di in (0, 1):
                wi = fi if di else 1 - fi
                out += wk * wj * wi * d[np.minimum(k0 + dk, nk - 1), np.minimum(j0 + dj, nj - 1),
                                        np.minimum(i0 + di, ni - 1)]
    out[~inside] = np.nan
    return out.reshape(points.shape[:-1])
