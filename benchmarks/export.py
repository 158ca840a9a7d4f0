"""Export speed: viewer.share.export to a folder, a ZIP and patient media, against a plain copy of the same files.

    python benchmarks/export.py [--instances 300] [--repeat 3] [--copy-viewer]

A library holds one CT study of --instances 512x512 slices (about 0.5 MB each).  Each round, in turn: the
reference (``shutil.copyfile`` of every stored file into a fresh folder, what ``cp`` would do); the export as DICOM to
a folder, to a ZIP (stored members) and to patient media (DICOMDIR via pydicom's FileSet, which stages every file
once before placing it).  Every destination is synced (``os.sync``) inside the timing, so page-cache tricks do not
favour anyone.  Best of --repeat each.  With --copy-viewer, one media export with the running installation copied
beside it (its size and time).  Prints one JSON line:

- copy_mb_per_s                 the reference
- folder_mb_per_s, zip_mb_per_s, media_mb_per_s
- ratio_folder_vs_copy, ratio_zip_vs_copy, ratio_media_vs_copy   (reference time / export time; 1 = as fast)
- viewer_copy_mb, viewer_copy_s (with --copy-viewer)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "packaging" / "lab"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--copy-viewer", action="store_true")
    args = parser.parse_args()

    from tests.pacs.conftest import ct_series
    from viewer.library import Library
    from viewer.share.export import ExportRequest, export
    from viewer.share.media import VIEWER_DIR, tree_size

    work = Path(tempfile.mkdtemp(prefix="mifas-export-bench-"))
    try:
        library = Library.open(work / "library")
        uids = []
        for ds in ct_series(args.instances, rows=512, columns=512):
            library.store_dataset(ds)
            uids.append(ds.SOPInstanceUID)
        records = [library.instance(u) for u in uids]
        total_mb = sum(r.size_bytes for r in records) / 1e6

        def reference(target: Path) -> None:
            target.mkdir()
            for index, record in enumerate(records):
                shutil.copyfile(record.path, target / f"IM{index:05d}.dcm")

        variants = {
            "copy": reference,
            "folder": lambda t: export(library, ExportRequest(uids, t)),
            "zip": lambda t: export(library, ExportRequest(uids, t.with_suffix(".zip"), container="zip")),
            "media": lambda t: export(library, ExportRequest(uids, t, container="media")),
        }
        best = {name: float("inf") for name in variants}
        for round_ in range(args.repeat):
            for name, run in variants.items():
                target = work / f"{name}-{round_}"
                started = time.perf_counter()
                run(target)
                os.sync()
                best[name] = min(best[name], time.perf_counter() - started)
                shutil.rmtree(target, ignore_errors=True)
                target.with_suffix(".zip").unlink(missing_ok=True)
        out: dict[str, object] = {"instances": args.instances, "total_mb": round(total_mb, 1)}
        for name, seconds in best.items():
            out[f"{name}_mb_per_s"] = round(total_mb / seconds, 1)
            if name != "copy":
                out[f"ratio_{name}_vs_copy"] = round(best["copy"] / seconds, 2)
        if args.copy_viewer:
            started = time.perf_counter()
            result = export(library, ExportRequest(uids[:1], work / "disc", container="media", copy_viewer=True))
            os.sync()
            out["viewer_copy_s"] = round(time.perf_counter() - started, 1)
            out["viewer_copy_mb"] = round(tree_size(result.destination / VIEWER_DIR) / 1e6)
        library.close()
        print(json.dumps(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
