"""Hostile files: mutations of valid files (a generated CT, pydicom's bundled compressed files, and the presentation
state, measurement report and key object selection of a saved reading), catalogued by kind, then seeded random
damage to the same bases."""

from __future__ import annotations

import functools
import random
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from tests.fuzz.harness import Case
from viewer.dicom.demo import ct_series_datasets

BASES = {  # pydicom's bundled files, one per compression
    "jpeg12": "JPGExtended.dcm", "jpeg_rgb": "SC_rgb_jpeg_dcmtk.dcm", "j2k": "MR_small_jp2klossless.dcm",
    "rle": "MR_small_RLE.dcm", "jls": "MR_small_jpeg_ls_lossless.dcm", "deflate": "image_dfl.dcm",
    "multiframe_rle": "SC_rgb_rle_2frame.dcm",
}


def _bundled(name: str) -> bytes:
    from pydicom.data import get_testdata_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(name)
    return Path(path).read_bytes()


def _ct() -> Dataset:
    ds = next(iter(ct_series_datasets(1, rows=64, cols=64, seed=12)))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _bytes(ds: Dataset) -> bytes:
    out = DicomBytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _with(**changes: object) -> bytes:
    ds = _ct()
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return _bytes(ds)


def _part10(meta: FileMetaDataset, body: bytes) -> bytes:
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + buffer.getvalue() + body


def _meta(ds: Dataset, tsuid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = tsuid
    return meta


def _body(ds: Dataset) -> bytes:
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    return body.getvalue()


def deflate_bomb(inflated: int = 300 << 20) -> bytes:
    """A header, then a Pixel Data element of `inflated` bytes of zeros, all deflated (about 0.1% of that)."""
    ds = _ct()
    del ds.PixelData
    ds.Rows = ds.Columns = int((inflated // 2) ** 0.5)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [deflater.compress(_body(ds)),
             deflater.compress(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, ds.Rows * ds.Columns * 2))]
    zeros = bytes(1 << 20)
    parts += [deflater.compress(zeros) for _ in range((ds.Rows * ds.Columns * 2) >> 20)]
    parts.append(deflater.flush())
    return _part10(_meta(ds, DeflatedExplicitVRLittleEndian), b"".join(parts))


def deep_sequence(depth: int) -> bytes:
    """Sequences nested `depth` deep (undefined lengths), explicit VR, before the pixel data."""
    ds = _ct()
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    opening = (struct.pack("<HH2sHL", 0x0040, 0x0275, b"SQ", 0, 0xFFFFFFFF) + item) * depth
    closing = (b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00") * depth
    body = _body(ds)
    at = body.find(struct.pack("<HH", 0x0040, 0x0275))
    at = at if at >= 0 else body.find(struct.pack("<HH", 0x7FE0, 0x0010))
    return _part10(_meta(ds, ExplicitVRLittleEndian), body[:at] + opening + closing + body[at:])


def _patch_length(data: bytes, tag: tuple[int, int], length: int) -> bytes:
    """Explicit VR little endian: the element `tag`'s length field set to `length`."""
    at = data.find(struct.pack("<HH", *tag), 132)
    vr = data[at + 4: at + 6]
    out = bytearray(data)
    if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"UC", b"UR", b"OV"):
        out[at + 8: at + 12] = struct.pack("<L", length)
    else:
        out[at + 6: at + 8] = struct.pack("<H", length & 0xFFFF)
    return bytes(out)


def _bad_vr(data: bytes, tag: tuple[int, int], vr: bytes) -> bytes:
    at = data.find(struct.pack("<HH", *tag), 132)
    out = bytearray(data)
    out[at + 4: at + 6] = vr
    return bytes(out)


def _with_transfer_syntax(data: bytes, tsuid: str) -> bytes:
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), force=True)
    meta = _meta(ds, tsuid)
    body = data[132:]
    (group_length,) = struct.unpack("<L", body[8:12])
    return _part10(meta, body[12 + group_length:])


def _compressed(base: str, frames: Callable[[list[bytes]], list[bytes]], **changes: object) -> bytes:
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(_bundled(BASES[base])))
    count = int(ds.get("NumberOfFrames", 1) or 1)
    new = frames(list(generate_frames(ds.PixelData, number_of_frames=count)))
    ds.PixelData = _encapsulate(new)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return _bytes(ds)


def _encapsulate(frames: list[bytes]) -> bytes:
    """PS3.5 A.4 items (an empty Basic Offset Table, one item per frame, padded to even), whatever the frames hold."""
    items = [b"\xfe\xff\x00\xe0" + struct.pack("<L", 0)]
    for frame in frames:
        frame += b"\0" * (len(frame) % 2)
        items.append(b"\xfe\xff\x00\xe0" + struct.pack("<L", len(frame)) + frame)
    return b"".join(items)  # pydicom writes the sequence delimiter


def _j2k_huge(frame: bytes) -> bytes:
    at = frame.find(b"\xff\x51")
    out = bytearray(frame)
    out[at + 6: at + 14] = struct.pack(">LL", 0xFFFFFF00, 0xFFFFFF00)  # Xsiz, Ysiz
    return bytes(out)


def _jpeg_huge(frame: bytes) -> bytes:
    at = next(i for i in range(2, len(frame) - 9) if frame[i] == 0xFF and frame[i + 1] in (0xC0, 0xC1, 0xC3))
    out = bytearray(frame)
    out[at + 5: at + 9] = struct.pack(">HH", 0xFFFF, 0xFFFF)
    return bytes(out)


def _rle_hostile(frame: bytes) -> bytes:
    return struct.pack("<16L", 15, *([0xFFFFFF00] * 15)) + frame[64:]


def catalogue() -> Iterator[tuple[str, Callable[[], bytes]]]:
    ct = _bytes(_ct())
    yield "truncated header", lambda: ct[:300]
    yield "truncated pixel data", lambda: ct[: len(ct) - 3000]
    yield "truncated preamble", lambda: ct[:140]
    yield "huge length claim: Patient's Name", lambda: _patch_length(ct, (0x0010, 0x0010), 0xFFFE)
    yield "huge length claim: Pixel Data", lambda: _patch_length(ct, (0x7FE0, 0x0010), 0xFFFFFFF0)
    yield "undefined length native Pixel Data", lambda: _patch_length(ct, (0x7FE0, 0x0010), 0xFFFFFFFF)
    yield "huge frame count", lambda: _with(NumberOfFrames=2147483647)
    yield "negative frame count", lambda: _with(NumberOfFrames="-5")
    yield "huge rows and columns", lambda: _with(Rows=65535, Columns=65535)
    yield "zero rows", lambda: _with(Rows=0)
    yield "pixel data too short for the header", lambda: _with(Rows=128)
    yield "pixel data longer than the header", lambda: _with(Rows=16)
    yield "12 bits allocated", lambda: _with(BitsAllocated=12)
    yield "64 bits allocated, 1 stored", lambda: _with(BitsAllocated=64, BitsStored=1, HighBit=0)
    yield "bits stored above allocated", lambda: _with(BitsStored=40, HighBit=39)
    yield "three samples of grey data", lambda: _with(SamplesPerPixel=3, PhotometricInterpretation="RGB")
    yield "palette without a palette", lambda: _with(PhotometricInterpretation="PALETTE COLOR")
    yield "deflate bomb (300 MiB)", deflate_bomb
    yield "deep sequences (200)", lambda: deep_sequence(200)
    yield "deep sequences (5000)", lambda: deep_sequence(5000)
    yield "bad VR in the header", lambda: _bad_vr(ct, (0x0010, 0x0010), b"\x00\x01")
    yield "bad VR on Pixel Data", lambda: _bad_vr(ct, (0x7FE0, 0x0010), b"ZZ")
    yield "SQ VR on Rows", lambda: _bad_vr(ct, (0x0028, 0x0010), b"SQ")
    yield "unknown VR 'EA' on Series Date", lambda: _bad_vr(ct, (0x0008, 0x0021), b"EA")  # found by seed 20261207
    yield "file meta cut inside an element", lambda: ct[:152]  # struct.error in pydicom's meta reader (same seed)
    for tsuid in ("1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.50",
                  "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.100", "9.9.9", "1.2.840.10008.1.2"):
        yield f"native data under transfer syntax {tsuid}", lambda tsuid=tsuid: _with_transfer_syntax(ct, tsuid)
    yield "JPEG data under the native transfer syntax", \
        lambda: _with_transfer_syntax(_bundled(BASES["jpeg12"]), ExplicitVRLittleEndian)
    yield "JPEG 2000 data under the JPEG transfer syntax", \
        lambda: _with_transfer_syntax(_bundled(BASES["j2k"]), "1.2.840.10008.1.2.4.50")
    yield "RLE data under JPEG-LS", lambda: _with_transfer_syntax(_bundled(BASES["rle"]), "1.2.840.10008.1.2.4.80")
    yield "JPEG frame cut in half", lambda: _compressed("jpeg12", lambda f: [f[0][: len(f[0]) // 2]])
    yield "JPEG frame claiming 65535 x 65535", lambda: _compressed("jpeg12", lambda f: [_jpeg_huge(f[0])])
    yield "JPEG colour frame cut", lambda: _compressed("jpeg_rgb", lambda f: [f[0][:200]])
    yield "JPEG 2000 frame cut in half", lambda: _compressed("j2k", lambda f: [f[0][: len(f[0]) // 2]])
    yield "JPEG 2000 frame claiming 4 billion pixels a side", lambda: _compressed("j2k", lambda f: [_j2k_huge(f[0])])
    yield "JPEG-LS frame cut", lambda: _compressed("jls", lambda f: [f[0][:40]])
    yield "RLE header with 15 segments out of range", lambda: _compressed("rle", lambda f: [_rle_hostile(f[0])])
    yield "RLE frame empty", lambda: _compressed("rle", lambda f: [b""])
    yield "encapsulated, no frames", lambda: _compressed("jpeg12", lambda f: [])
    yield "multi-frame RLE with frames missing", lambda: _compressed("multiframe_rle", lambda f: f[:1])
    yield "multi-frame RLE claiming 100000 frames", \
        lambda: _compressed("multiframe_rle", lambda f: f, NumberOfFrames=100000)
    yield "a stray sequence delimiter after Pixel Data", \
        lambda: _compressed("jpeg12", lambda f: f) + b"\xfe\xff\xdd\xe0" + bytes(4)
    yield "deflated file cut", lambda: _bundled(BASES["deflate"])[:900]
    for name in ("gsps", "sr", "kos"):
        yield f"saved reading's {name}, whole", lambda name=name: reading_objects()[name]
        yield f"saved reading's {name} cut in half", lambda name=name: reading_objects()[name][
            : len(reading_objects()[name]) // 2]


def random_damage(rng: random.Random, data: bytes) -> bytes:
    """One of: bytes overwritten, a run removed, a run repeated, a length-field-sized run of 0xFF, a cut."""
    out = bytearray(data)
    how = rng.randrange(5)
    at = rng.randrange(132, len(out))
    if how == 0:
        for _ in range(rng.randint(1, 16)):
            out[rng.randrange(132, len(out))] = rng.randrange(256)
    elif how == 1:
        del out[at: at + rng.randint(1, 64)]
    elif how == 2:
        out[at:at] = out[at: at + rng.randint(1, 256)] * rng.randint(2, 64)
    elif how == 3:
        out[at: at + 4] = b"\xff\xff\xff\x7f"
    else:
        del out[at:]
    return bytes(out)


@functools.lru_cache(maxsize=1)
def reading_objects() -> dict[str, bytes]:
    """The GSPS, SR and KOS a reading of every measurement kind, a key image and a calibration saves (written by
    viewer.reading.persist into a throw-away library): bases for damage."""
    from tests.reading.saved_support import make_study, marked_store
    from viewer.reading import persist

    with tempfile.TemporaryDirectory(prefix="mifas-fuzz-reading-") as tmp:
        study = make_study(Path(tmp) / "library")
        try:
            saved = persist.save_reading(study.library, marked_store(study), study.study_uid)
            uids = {"gsps": saved.presentation_states[0], "sr": saved.report, "kos": saved.key_objects}
            return {name: study.library.path_of(uid).read_bytes() for name, uid in uids.items()}
        finally:
            study.library.close()


def random_cases(rng: random.Random) -> Iterator[tuple[str, Callable[[], bytes]]]:
    bases: dict[str, bytes] = {"ct": _bytes(_ct())}
    for key, name in BASES.items():
        bases[key] = _bundled(name)
    bases.update(reading_objects())
    names = sorted(bases)
    for n in range(1_000_000):
        base = names[rng.randrange(len(names))]
        damaged = random_damage(rng, bases[base])
        yield f"random #{n} from {base}", lambda damaged=damaged: damaged


def file_cases(folder: Path, pairs: Iterator[tuple[str, Callable[[], bytes]]]) -> Iterator[Case]:
    for k, (name, build) in enumerate(pairs):
        def prepare(k: int = k, build: Callable[[], bytes] = build) -> dict:
            work = folder / f"case{k}"
            work.mkdir(parents=True, exist_ok=True)
            path = work / "hostile.dcm"
            path.write_bytes(build())
            return {"op": "file", "path": str(path), "work": str(work)}

        def close(k: int = k) -> None:
            import shutil

            shutil.rmtree(folder / f"case{k}", ignore_errors=True)

        yield Case(f"file: {name}", prepare, close)
