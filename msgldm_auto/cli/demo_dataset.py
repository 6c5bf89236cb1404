"""msgldm_make_demo_dataset -d 901 --cases 24 --seed 0 [--resolution 2] [--test-cases N] [--skull] [--overwrite]."""
from __future__ import annotations

import argparse
import sys
import time

from msgldm_auto.cli._common import entry_point, print_roots


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msgldm_make_demo_dataset",
                                     description="Build the synthetic four-contrast (T1, T2, FLAIR, PD) demo dataset "
                                                 "from nilearn's MNI152 templates into MSGLDM_RAW.")
    parser.add_argument("-d", "--dataset-id", "--dataset_id", dest="dataset_id", type=int, default=901,
                        help="dataset ID (default 901)")
    parser.add_argument("--name", default="Demo", help="dataset name (default Demo -> Dataset901_Demo)")
    parser.add_argument("--cases", type=int, default=24, help="training cases (default 24)")
    parser.add_argument("--test-cases", "--test_cases", dest="test_cases", type=int, default=4,
                        help="imagesTs cases with held-out contrasts (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same dataset")
    parser.add_argument("--resolution", type=float, default=2.0, help="isotropic voxel size in mm (default 2)")
    parser.add_argument("--skull", action="store_true",
                        help="add a CSF/skull/scalp shell and background noise (unstripped look)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this ID")
    return parser


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print_roots()
    from dataset_conversion.demo_dataset import make_demo_dataset  # after parsing: --help stays instant

    start = time.perf_counter()
    folder = make_demo_dataset(dataset_id=args.dataset_id, name=args.name, cases=args.cases, test_cases=args.test_cases,
                               seed=args.seed, resolution_mm=args.resolution, add_skull=args.skull,
                               overwrite=args.overwrite)
    print(f"demo dataset written to {folder} ({args.cases} training + {args.test_cases} test cases, "
          f"{time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
