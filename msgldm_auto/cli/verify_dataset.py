"""msgldm_verify_dataset -d ID [--resample-mismatched]: print every problem of a raw dataset, one line each.

Exit status 0 when the dataset is usable (warnings allowed), 1 when anything is wrong, 2 for a usage error.
"""
from __future__ import annotations

import argparse
import sys

from msgldm_auto.cli._common import add_dataset_argument, entry_point, print_roots
from msgldm_auto.dataset.verify import verify_dataset
from msgldm_auto.paths import raw_dataset_folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msgldm_verify_dataset", description="Check a raw dataset's integrity.")
    add_dataset_argument(parser)
    parser.add_argument("--resample-mismatched", "--resample_mismatched", dest="resample_mismatched",
                        action="store_true",
                        help="treat modalities on different grids as a warning (they get resampled onto the first one)")
    return parser


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print_roots()
    report = verify_dataset(raw_dataset_folder(args.dataset), resample_mismatched=args.resample_mismatched)
    if report.problems:
        print(report.format())
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
