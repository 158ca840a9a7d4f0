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

Oblique planes: :meth:`Mpr.rotate` turns the other two planes about one plane's viewing direction (through the
crosshair), as a reader does to follow a vessel or a spine that is not straight; those planes are then resampled
whatever the volume.  ``pixels_max`` bounds a resampled plane per side: the views ask for a coarse plane while the
mouse moves and the full one when it stops (level of detail, as in the volume rendering).
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
SLAB_MODES = ("mip", "minip", "mean")
ALIGN_TOLERANCE = 1e-3  # |direction cosine| within this of 1 counts as "along a patient axis"
SLAB_MM_MAX = 200.0
OBLIQUE_PIXELS_MAX = 1024  # per side of a resampled plane
INTERACTIVE_PIXELS_MAX = 256  # per side of a resampled plane while the mouse moves


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


@dataclass(frozen=True)
class ResampleRequest:
    """One resampled plane to compute: where it lies (anchor, axes), slab and resolution; ``key`` identifies it."""

    plane: str
    key: tuple
    anchor: np.ndarray
    right: np.ndarray
    down: np.ndarray
    normal: np.ndarray
    slab_mm: float
    mode: str
    pixels_max: int


class Mpr:
    """Three planes of one volume through a crosshair.  Not thread-safe (one per view)."""

    def __init__(self, volume: Volume) -> None:
        self.volume = volume
        g = volume.geometry
        self._axes = np.array([g.normal, g.column_direction, g.row_direction])  # array axis (k, j, i) -> patient
        self._aligned = self._axis_map() if self._is_aligned() else None
        self._centre = g.to_patient([(n - 1) / 2 for n in g.shape])
        self.crosshair = self._centre.copy()
        self._plane_axes = dict(_DEFAULT_AXES)
        self._corners = np.array([g.to_patient((k, j, i)) for k in (0, g.shape[0] - 1) for j in (0, g.shape[1] - 1)
                                  for i in (0, g.shape[2] - 1)])
        # the last resampled image of each plane, coarse and full (at most 2 x 3 images)
        self._resampled: dict[tuple[str, int], tuple[tuple, PlaneImage]] = {}

    # -- orientation of the planes -----------------------------------------------------------------------------

    def axes(self, plane: str) -> tuple[np.ndarray, np.ndarray]:
        """(screen right, screen down) of `plane` in patient coordinates (unit vectors)."""
        return self._plane_axes[plane]

    def normal(self, plane: str) -> np.ndarray:
        """The viewing direction of `plane` (right x down)."""
        right, down = self._plane_axes[plane]
        return np.cross(right, down)

    def rotate(self, about: str, degrees: float) -> None:
        """Turn the two other planes by `degrees` about `about`'s viewing direction, through the crosshair.  On
        `about`'s screen a positive angle turns their lines clockwise."""
        if about not in SCREEN_AXES:
            raise ValueError(f"unknown plane {about!r}; use one of {', '.join(PLANES)}")
        turn = _rotation(self.normal(about), float(degrees))
        for plane in PLANES:
            if plane != about:
                right, down = self._plane_axes[plane]
                right, down = turn @ right, turn @ down
                down = down - right * float(down @ right)  # keep them orthonormal over many small turns
                self._plane_axes[plane] = (right / np.linalg.norm(right), down / np.linalg.norm(down))

    def reset_rotation(self) -> None:
        self._plane_axes = dict(_DEFAULT_AXES)

    def is_rotated(self, plane: str) -> bool:
        return not all(np.allclose(a, b, atol=1e-9) for a, b in zip(self._plane_axes[plane], _DEFAULT_AXES[plane],
                                                                      strict=True))

    @property
    def rotated(self) -> bool:
        return any(self.is_rotated(p) for p in PLANES)

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
        normal = self.normal(plane)
        if self._aligned is not None and not self.is_rotated(plane):
            array_axis, _ = self._aligned[int(np.argmax(np.abs(normal)))]
            return float(self.volume.geometry.spacing[array_axis])
        return float(min(self.volume.geometry.spacing))

    def scroll(self, plane: str, steps: int) -> None:
        """Move the crosshair `steps` slices along `plane`'s viewing direction."""
        normal = self.normal(plane)
        self.set_crosshair(self.crosshair + normal * self.step_mm(plane) * steps)

    # -- planes ---------------------------------------------------------------------------------------------

    def resample_request(self, plane: str, *, slab_mm: float = 0.0, mode: str = "mip",
                         pixels_max: int = OBLIQUE_PIXELS_MAX) -> ResampleRequest | None:
        """What resampling `plane` now needs (None: it is a plain array slice).  With :meth:`resample` (pure,
        safe in a worker thread) and :meth:`adopt` (back on the owner's thread), a view computes turned planes in
        the background; :meth:`plane` then finds them ready."""
        if self._aligned is not None and not self.is_rotated(plane):
            return None
        right, down = self._plane_axes[plane]
        normal = self.normal(plane)
        slab_mm = min(max(float(slab_mm), 0.0), SLAB_MM_MAX)
        pixels_max = min(max(int(pixels_max), 16), OBLIQUE_PIXELS_MAX)
        key = (tuple(right), tuple(down), round(float(self.crosshair @ normal), 6), slab_mm, mode, pixels_max)
        anchor = self._centre + normal * float((self.crosshair - self._centre) @ normal)
        return ResampleRequest(plane, key, anchor, right, down, normal, slab_mm, mode, pixels_max)

    def has(self, request: ResampleRequest) -> bool:
        """Whether the image `request` asks for is already at hand."""
        cached = self._resampled.get((request.plane, request.pixels_max))
        return cached is not None and cached[0] == request.key

    def adopt(self, request: ResampleRequest, image: PlaneImage) -> None:
        self._resampled[(request.plane, request.pixels_max)] = (request.key, image)

    def plane(self, plane: str, *, slab_mm: float = 0.0, mode: str = "mip",
              pixels_max: int = OBLIQUE_PIXELS_MAX) -> PlaneImage:
        """`plane` through the crosshair; a resampled plane has at most `pixels_max` pixels a side."""
        if plane not in SCREEN_AXES:
            raise ValueError(f"unknown plane {plane!r}; use one of {', '.join(PLANES)}")
        if mode not in SLAB_MODES:
            raise ValueError(f"unknown slab mode {mode!r}; use one of {', '.join(SLAB_MODES)}")
        slab_mm = min(max(float(slab_mm), 0.0), SLAB_MM_MAX)
        request = self.resample_request(plane, slab_mm=slab_mm, mode=mode, pixels_max=pixels_max)
        if request is None:
            return self._aligned_plane(plane, slab_mm, mode)
        return self._oblique_plane(request)

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

    def _oblique_plane(self, request: ResampleRequest) -> PlaneImage:
        """A resampled plane.  Its grid is anchored on the volume centre's projection, not on the crosshair, so
        the image depends only on where the plane lies: a crosshair move within the plane reuses it."""
        if not self.has(request):
            self.adopt(request, self.resample(request))
        image = self._resampled[(request.plane, request.pixels_max)][1]
        right, down = request.right, request.down
        rel = self.crosshair - image.origin
        cross = (float(rel @ down) / image.spacing[0], float(rel @ right) / image.spacing[1])
        return PlaneImage(request.plane, image.data, image.origin, right, down, image.spacing, cross)

    def resample(self, request: ResampleRequest) -> PlaneImage:
        """Resample the plane of `request` (reads the volume only: safe in a worker thread)."""
        plane, anchor, right, down, normal = request.plane, request.anchor, request.right, request.down, request.normal
        slab_mm, mode, pixels_max = request.slab_mm, request.mode, request.pixels_max
        g = self.volume.geometry
        step = float(min(g.spacing))
        rel = self._corners - anchor
        r_lo, r_hi = (rel @ right).min(), (rel @ right).max()
        d_lo, d_hi = (rel @ down).min(), (rel @ down).max()
        step = max(step, max(r_hi - r_lo, d_hi - d_lo) / (pixels_max - 1) * (1 + 1e-9))  # samples include both ends
        cols = np.arange(r_lo, r_hi + step / 2, step)
        rows = np.arange(d_lo, d_hi + step / 2, step)
        offsets = [0.0]
        if slab_mm > 0:
            half = slab_mm / 2
            offsets = list(np.arange(-half, half + step / 2, step))
        samples = []
        for offset in offsets:
            points = (anchor + normal * offset)[None, None, :] + rows[:, None, None] * down + \
                cols[None, :, None] * right
            samples.append(_trilinear(self.volume, points))
        stack = np.stack(samples)
        image = stack[0] if len(samples) == 1 else {"mip": np.nanmax, "minip": np.nanmin, "mean": np.nanmean}[mode](stack, axis=0)
        fill = float(np.min(self.volume.data))
        image = np.where(np.isnan(image), fill, image).astype(np.float32)
        image.setflags(write=False)  # shared by the PlaneImages made from the cache
        origin = anchor + right * cols[0] + down * rows[0]
        return PlaneImage(plane, image, origin, right, down, (step, step), (0.0, 0.0))


_DEFAULT_AXES = {plane: (np.asarray(r, dtype=float), np.asarray(d, dtype=float)) for plane, (r, d) in SCREEN_AXES.items()}


def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    """The rotation matrix of `degrees` about `axis` (right-handed, Rodrigues)."""
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    a = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)


def _trilinear(volume: Volume, points: np.ndarray) -> np.ndarray:
    """Sample the volume at patient points (..., 3) by trilinear interpolation; NaN outside.  Only the points
    inside are interpolated, from flat indices into the array (seven lerps per point, float32)."""
    g = volume.geometry
    inverse = np.linalg.inv(g.matrix())
    flat = points.reshape(-1, 3)
    ijk = (flat @ inverse[:3, :3].T + inverse[:3, 3]).astype(np.float32)
    nk, nj, ni = g.shape
    i, j, k = ijk[:, 0], ijk[:, 1], ijk[:, 2]
    inside = (i >= 0) & (i <= ni - 1) & (j >= 0) & (j <= nj - 1) & (k >= 0) & (k <= nk - 1)
    out = np.full(len(flat), np.nan, dtype=np.float32)
    where = np.flatnonzero(inside)
    if where.size == 0:
        return out.reshape(points.shape[:-1])
    i, j, k = i[where], j[where], k[where]
    i0 = np.minimum(i.astype(np.int64), max(ni - 2, 0))  # truncation = floor: the points are inside
    j0 = np.minimum(j.astype(np.int64), max(nj - 2, 0))
    k0 = np.minimum(k.astype(np.int64), max(nk - 2, 0))
    fi, fj, fk = i - i0, j - j0, k - k0
    si, sj, sk = (1 if ni > 1 else 0), (ni if nj > 1 else 0), (ni * nj if nk > 1 else 0)
    base = (k0 * nj + j0) * ni + i0
    data = volume.data.reshape(-1)

    def at(offset: int) -> np.ndarray:
        return data.take(base + offset).astype(np.float32)

    def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
        return a + (b - a) * t

    c00 = lerp(at(0), at(si), fi)
    c01 = lerp(at(sj), at(sj + si), fi)
    c10 = lerp(at(sk), at(sk + si), fi)
    c11 = lerp(at(sk + sj), at(sk + sj + si), fi)
    out[where] = lerp(lerp(c00, c01, fj), lerp(c10, c11, fj), fk)
    return out.reshape(points.shape[:-1])
