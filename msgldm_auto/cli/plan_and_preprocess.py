"""`msgldm_plan_and_preprocess` and its three steps on their own (`msgldm_extract_fingerprint`,
`msgldm_plan_experiment`, `msgldm_preprocess`). Parse, call planning.workflow, print."""
from __future__ import annotations

import argparse
import os
import sys

from msgldm_auto.cli._common import add_dataset_argument, add_plans_argument, entry_point, print_roots
from msgldm_auto.paths import resolve_dataset_name
from msgldm_auto.plans import DEFAULT_CONFIGURATION, DEFAULT_PLANS_NAME


def _default_processes() -> int:
    return max(1, min(8, (os.cpu_count() or 2)))


def _add_processes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-np", "--num-processes", "--num_processes", dest="num_processes", type=int,
                        default=_default_processes(), help="worker processes (default: CPU count, at most 8)")
    parser.add_argument("-npfp", dest="num_processes_fingerprint", type=int, default=None,
                        help="worker processes for the fingerprint (default: -np)")


def _add_resample(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resample-mismatched", "--resample_mismatched", action="store_true",
                        help="resample modalities whose grid differs onto the case's first modality instead of failing")


def _add_planning(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-pl", "--preset", default="default", choices=("default", "cpu"),
                        help="planner preset: default (GPU) or cpu (small, ~10 min per fold on 2 cores)")
    parser.add_argument("-gpu_memory_target", "--gpu-memory-target", "--gpu_memory_target", dest="gpu_memory_target",
                        type=float, default=8.0, help="GPU memory (GB) the batch size is planned for (default 8)")
    parser.add_argument("-device", "--device", default=None, choices=("cpu", "cuda", "mps"),
                        help="device to plan for (default: cpu for -pl cpu, else cuda)")
    parser.add_argument("--overwrite_target_spacing", "--overwrite-target-spacing", dest="overwrite_target_spacing",
                        type=float, nargs="+", default=None, help="in-plane (2 values) or RAS (3 values) spacing in mm")
    parser.add_argument("-p", "-overwrite_plans_name", "--plans-name", dest="plans_name", default=None,
                        help=f"name of the plans to write (default {DEFAULT_PLANS_NAME}, "
                             f"{DEFAULT_PLANS_NAME}_cpu for -pl cpu)")


def _add_preprocessing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--configurations", nargs="+", default=[DEFAULT_CONFIGURATION],
                        help=f"configurations to preprocess (default {DEFAULT_CONFIGURATION})")
    parser.add_argument("--clean", action="store_true", help="recompute the fingerprint and redo every case")


def _plan(args: argparse.Namespace, dataset_name: str):
    from planning.planner import describe_plans
    from planning.workflow import plan_dataset

    plans, path = plan_dataset(dataset_name, args.preset, args.gpu_memory_target, args.device,
                               args.overwrite_target_spacing, args.plans_name)
    print(describe_plans(plans))
    print(f"plans written to {path}")
    return plans


def _preprocess(args: argparse.Namespace, dataset_name: str, plans) -> None:
    from planning.workflow import preprocess

    for configuration in args.configurations:
        report = preprocess(dataset_name, plans, configuration, args.num_processes, args.clean,
                            args.resample_mismatched)
        print(f"{configuration}: {len(report.done)} case(s) preprocessed, {len(report.skipped)} already done -> "
              f"{report.folder}")


def _fingerprint(args: argparse.Namespace, dataset_name: str) -> None:
    from planning.workflow import fingerprint_dataset

    processes = args.num_processes_fingerprint or args.num_processes
    fingerprint = fingerprint_dataset(dataset_name, processes, args.resample_mismatched, args.clean)
    summary = fingerprint.compute_summary()
    print(f"{dataset_name}: fingerprint of {summary['num_cases']} cases; median RAS spacing "
          f"{[round(s, 3) for s in summary['median_ras_spacing']]} mm; modalities {summary['modality_counts']}")


def _verify_and_fingerprint(args: argparse.Namespace, identifier: str) -> str:
    """The integrity check (unless --no-verify), then the fingerprint; returns the dataset's full name."""
    from planning.workflow import verify_raw_dataset

    dataset_name = resolve_dataset_name(identifier)
    if args.verify:
        verify_raw_dataset(dataset_name, args.resample_mismatched)
    _fingerprint(args, dataset_name)
    return dataset_name


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="msgldm_plan_and_preprocess", description=
                                     "Verify, fingerprint, plan and preprocess dataset(s) for MSG-LDM training.")
    add_dataset_argument(parser, nargs="+")
    _add_processes(parser)
    _add_resample(parser)
    _add_planning(parser)
    _add_preprocessing(parser)
    parser.add_argument("--no-verify", "--no_verify", dest="verify", action="store_false",
                        help="skip the dataset checks")
    parser.add_argument("--no_pp", "--no-pp", dest="preprocess", action="store_false",
                        help="plan only, do not preprocess")
    args = parser.parse_args(argv)
    print_roots()
    for identifier in args.dataset:
        dataset_name = _verify_and_fingerprint(args, identifier)
        plans = _plan(args, dataset_name)
        if args.preprocess:
            _preprocess(args, dataset_name, plans)
    return 0


@entry_point
def extract_fingerprint_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="msgldm_extract_fingerprint", description="Write dataset_fingerprint.json.")
    add_dataset_argument(parser, nargs="+")
    _add_processes(parser)
    _add_resample(parser)
    parser.add_argument("--clean", action="store_true", help="recompute even if a matching fingerprint exists")
    parser.add_argument("--no-verify", "--no_verify", dest="verify", action="store_false",
                        help="skip the dataset checks")
    args = parser.parse_args(argv)
    print_roots()
    for identifier in args.dataset:
        _verify_and_fingerprint(args, identifier)
    return 0


@entry_point
def plan_experiment_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="msgldm_plan_experiment", description="Write the plans from the fingerprint.")
    add_dataset_argument(parser, nargs="+")
    _add_planning(parser)
    args = parser.parse_args(argv)
    print_roots()
    for identifier in args.dataset:
        _plan(args, resolve_dataset_name(identifier))
    return 0


def build_preprocess_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msgldm_preprocess",
                                     description="Preprocess the cases of planned dataset(s).")
    add_dataset_argument(parser, nargs="+")
    _add_processes(parser)
    _add_resample(parser)
    _add_preprocessing(parser)
    add_plans_argument(parser)
    return parser


@entry_point
def preprocess_main(argv: list[str] | None = None) -> int:
    args = build_preprocess_parser().parse_args(argv)
    print_roots()
    from planning.workflow import load_plans

    for identifier in args.dataset:
        dataset_name = resolve_dataset_name(identifier)
        _preprocess(args, dataset_name, load_plans(dataset_name, args.plans))
    return 0


if __name__ == "__main__":
    sys.exit(main())
