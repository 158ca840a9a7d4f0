"""Saved readings (issue 13): what an autosave and a reopen cost on a long series.

    python benchmarks/saved_reading.py [--slices 300] [--repeat 3]

A fresh library holds one CT series of --slices 512x512 slices; the reading has 20 measurements (every kind) on 10
slices and 5 key images.  Prints one JSON line (best of --repeat, milliseconds):

- save_first_ms        persist.save_reading writing GSPS + SR + KOS for the first time
- save_again_ms        the same after one more measurement: the drafts replaced in place (the autosave path)
- headers_ms           reference, same run: reading the series' headers alone with viewer.dicom.image.read_header
                       (the GSPS references every image of the series, so a save reads them all)
- store_floor_ms       reference, same run: Library.store_bytes of the same three objects into a fresh library
                       (the atomic write alone: temp, fsync, rename, index commit)
- list_ms              persist.readings_for_series (the picker's question on opening the series)
- load_ms              persist.load_reading into a fresh AnnotationStore
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def best_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return round(min(times), 1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import io

    import pydicom

    from viewer.dicom.demo import ct_series_datasets
    from viewer.dicom.image import read_header
    from viewer.library import Library
    from viewer.reading import persist
    from viewer.reading.annotations import Annotation, AnnotationStore

    with tempfile.TemporaryDirectory() as tmp:
        library = Library(Path(tmp) / "lib")
        uids = []
        for ds in ct_series_datasets(args.slices, seed=3):
            buf = io.BytesIO()
            pydicom.dcmwrite(buf, ds, enforce_file_format=True)
            library.store_bytes(buf.getvalue())
            uids.append(str(ds.SOPInstanceUID))
        study_uid, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        store = AnnotationStore()
        for i in range(20):
            uid = uids[(i % 10) * (args.slices // 10)]
            store.add([Annotation("distance", (uid, 0), ((10.0 + i, 10.0), (200.0, 300.0))),
                       Annotation("angle", (uid, 0), ((100.0, 100.0), (50.0, 100.0), (100.0, 180.0))),
                       Annotation("rectangle", (uid, 0), ((100.0, 100.0), (200.0, 220.0 + i))),
                       Annotation("ellipse", (uid, 0), ((300.0, 300.0), (380.0, 400.0 + i))),
                       Annotation("probe", (uid, 0), ((256.0, 256.0 + i),))][i % 5])
        for i in range(5):
            store.set_key_image((uids[i * (args.slices // 5)], 0), True)

        first = {}

        def save_first() -> None:
            fresh = AnnotationStore()
            for _, a in store.items():
                fresh.add(a)
            for key in store.key_images():
                fresh.set_key_image(key, True)
            persist.mark_sent(library, persist.reading_uids(library, study_uid))  # so each round writes anew
            first["saved"] = persist.save_reading(library, fresh, study_uid)

        save_first_ms = best_ms(save_first, args.repeat)
        persist.save_reading(library, store, study_uid)

        def save_again() -> None:
            store.add(Annotation("distance", (uids[0], 0), ((1.0, 1.0), (5.0, 5.0))))
            persist.save_reading(library, store, study_uid)

        save_again_ms = best_ms(save_again, args.repeat)
        headers_ms = best_ms(lambda: [read_header(r.path) for r in library.instances(series_uid)], args.repeat)
        blobs = [library.path_of(u).read_bytes() for u in first["saved"].all()]

        def store_floor() -> None:
            with tempfile.TemporaryDirectory() as other, Library(Path(other) / "lib") as lib:
                for data in blobs:
                    lib.store_bytes(data)

        store_floor_ms = best_ms(store_floor, args.repeat)
        list_ms = best_ms(lambda: persist.readings_for_series(library, series_uid), args.repeat)
        newest = persist.readings_for_series(library, series_uid)[0].sop_instance_uid
        load_ms = best_ms(lambda: persist.load_reading(library, newest, AnnotationStore()), args.repeat)
        library.close()
    print(json.dumps({"slices": args.slices, "save_first_ms": save_first_ms, "save_again_ms": save_again_ms,
                      "headers_ms": headers_ms, "store_floor_ms": store_floor_ms, "list_ms": list_ms,
                      "load_ms": load_ms}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
