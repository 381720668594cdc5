"""``python -m paric.data check <dir> --format <name>``: validate a native dataset before a long run.

Why a separate command: a cluster job should not find a missing image or a mislabelled row hours
in. This reports *every* problem at once (missing or unreadable images and masks, unknown split
values, labels outside the class list, missing metadata columns, malformed lines, empty splits),
each naming the file, the row or line, and what was expected, and prints the image count per
split and group. Exit status 0 when there is no problem, 1 when there is any, 2 on bad usage.
The data stage runs the same check before it builds an index.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from paric.data.formats import FORMATS, CheckReport, check_source


def check_dataset(src: str | Path, fmt: str, images: str = "decode", **opts) -> CheckReport:
    """Check a native dataset directory; the report holds every problem and the group counts."""
    report, _ = check_source(fmt, src, images, **opts)  # type: ignore[arg-type]
    return report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m paric.data", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="validate a native dataset directory and report every problem")
    c.add_argument("dir", type=Path, help="the native dataset directory (what data.root names)")
    c.add_argument("--format", required=True, choices=sorted(FORMATS), help="layout of the directory")
    c.add_argument("--images", default="decode", choices=["decode", "open", "exists"],
                   help="decode every image fully (default), read headers only, or only test existence")
    c.add_argument("--masks", type=Path, help="waterbirds: CUB segmentations folder to check too")
    c.add_argument("--captions", type=Path, help="image-caption source (.csv, .jsonl, COCO .json) to check too")
    c.add_argument("--classes", nargs="+", help="food101: class subset (default: GALS' red meat)")
    c.add_argument("--val-fraction", type=float, help="food101: share of train held out as val (default 0.2)")
    c.add_argument("--seed", type=int, help="seed of the splits built here (default 0)")
    c.add_argument("--min-captions", type=int, help="coco_gender: captions needed for a label (default 3)")
    c.add_argument("--eval-per-class", type=int, help="coco_gender: man/woman images per eval split (default 500)")
    c.add_argument("--split-dir", type=Path, help="coco_gender: GALS' COCO_gender split files")
    return p


_OPTS = ("masks", "captions", "classes", "val_fraction", "seed", "min_captions", "eval_per_class", "split_dir")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    opts = {k: getattr(args, k) for k in _OPTS if getattr(args, k) is not None}
    try:
        report = check_dataset(args.dir, args.format, args.images, **opts)
    except TypeError as exc:  # an option the format does not take
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.render())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
