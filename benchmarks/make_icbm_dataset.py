"""Build the measured-contrast benchmark dataset Dataset902_ICBM152 (T1 / T2 / PD) into MSGLDM_RAW.

    .venv/bin/python -m benchmarks.make_icbm_dataset [-d 902] [--cases 24] [--test-cases 18] [--seed 0]
        [--wheel spm_runtime-25.1.2.post4-py3-none-any.whl] [--cache ~/.cache/msgldm_auto] [--overwrite]

Without --wheel, `pip download --no-deps spm-runtime==25.1.2.post4` fetches the 82 MB wheel into the cache once.
See dataset_conversion/icbm_benchmark.py for what the dataset holds and why.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.paths import roots


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.make_icbm_dataset",
                                     description="Build the ICBM152 measured-contrast (T1, T2, PD) benchmark dataset "
                                                 "from SPM's avg152 templates into MSGLDM_RAW.")
    parser.add_argument("-d", "--dataset-id", "--dataset_id", dest="dataset_id", type=int, default=902,
                        help="dataset ID (default 902 -> Dataset902_ICBM152)")
    parser.add_argument("--cases", type=int, default=24, help="training cases (default 24; 5 of them lack a contrast)")
    parser.add_argument("--test-cases", "--test_cases", dest="test_cases", type=int, default=18,
                        help="imagesTs cases, each lacking one contrast (default 18: six test volumes per target, "
                             "the benchmarks' set; the first 6 are the earlier 6-case set's)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same dataset")
    parser.add_argument("--wheel", type=Path, default=None,
                        help="the spm_runtime-25.1.2.post4 wheel (default: download it into --cache with pip)")
    parser.add_argument("--cache", type=Path, default=None, help="download folder (default ~/.cache/msgldm_auto)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this ID")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(roots().describe())
    try:
        folder, seconds = build(args)
    except MSGLDMError as err:           # a user error (no wheel, dataset exists): one line, like the msgldm_* tools
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    print(f"ICBM152 dataset written to {folder} ({args.cases} training + {args.test_cases} test cases, "
          f"{seconds:.0f} s)")
    return 0


def build(args: argparse.Namespace) -> tuple[Path, float]:
    from dataset_conversion.icbm_benchmark import make_icbm_dataset  # after parsing: --help stays instant

    start = time.perf_counter()
    folder = make_icbm_dataset(wheel=args.wheel, dataset_id=args.dataset_id, cases=args.cases,
                               test_cases=args.test_cases, seed=args.seed, overwrite=args.overwrite, cache=args.cache)
    return folder, time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
