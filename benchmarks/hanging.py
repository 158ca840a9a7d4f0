"""Hanging protocols (issue 13): what choosing a layout costs on the GUI thread when a study opens, against
opening one series (what opening a study cost before), in the same run.

    python benchmarks/hanging.py [--series 8] [--slices 200] [--repeat 20]

Two chest CT studies (current and prior, --series series of --slices 64x64 slices each, plus a localizer) and a
four-view mammography study are stored in a fresh library.  Prints one JSON line (milliseconds, median of
--repeat, page cache warm):

- gather_ms: the facts of one CT study (library index + one header per series)
- gather_mammo_ms: the facts of the mammography study (its four images read one by one)
- choose_resolve_ms: choosing among the shipped protocols and resolving the first display set, current + prior
- hang_ms: what MainWindow.open_study adds before opening the series: loading the rules files, gather twice,
  choose, resolve
- open_series_ms (reference): opening one series of --slices slices from the library index (order_frames), which
  every viewport does anyway, and which was all the old open_study did
- hang_vs_open_series: hang_ms / open_series_ms
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


def store_ct(library, series: int, slices: int, z0: float):
    from tests.reading.hanging_studies import Study, add_series

    study = Study()
    add_series(library, study, "scout", "CT", "Topogram", n=1, body_part="CHEST",
               image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    for k in range(series):
        add_series(library, study, f"s{k}", "CT", ("Lung", "Mediastinum", "Bone", "Body")[k % 4] + f" {k}",
                   n=slices, body_part="CHEST", z0=z0)
    return study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=8)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    import os

    from tests.reading.hanging_studies import mammography
    from viewer.library import Library
    from viewer.reading.protocol_files import load_protocols
    from viewer.reading.protocols import choose
    from viewer.reading.study_facts import gather
    from viewer.ui.series_source import open_series

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MIFAS_SYSTEM_CONFIG_DIR"] = str(Path(tmp) / "etc")  # the shipped protocols only
        os.environ["MIFAS_CONFIG_DIR"] = str(Path(tmp) / "home")
        library = Library.open(Path(tmp) / "library")
        current = store_ct(library, args.series, args.slices, 0.0)
        prior = store_ct(library, args.series, args.slices, 200.0)
        mammo = mammography(library)
        protocols = load_protocols().protocols
        facts = gather(library, current.uid), gather(library, prior.uid)

        def hang() -> None:
            found = load_protocols().protocols
            hanging = choose(found, gather(library, current.uid), gather(library, prior.uid))
            hanging.placements(0)

        def choose_resolve() -> None:
            choose(protocols, *facts).placements(0)

        result = {
            "series": args.series, "slices": args.slices, "repeat": args.repeat,
            "gather_ms": median_ms(lambda: gather(library, current.uid), args.repeat),
            "gather_mammo_ms": median_ms(lambda: gather(library, mammo.uid), args.repeat),
            "choose_resolve_ms": median_ms(choose_resolve, args.repeat),
            "hang_ms": median_ms(hang, args.repeat),
            "open_series_ms": median_ms(lambda: open_series(library, current.series["s0"]), args.repeat),
        }
        result["hang_vs_open_series"] = round(result["hang_ms"] / result["open_series_ms"], 2)
        assert choose(protocols, *facts).protocol.name == "CT chest with prior"
        library.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
