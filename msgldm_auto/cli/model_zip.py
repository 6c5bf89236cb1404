"""`msgldm_export_model_to_zip` and `msgldm_install_pretrained_model_from_zip` (documentation/inference.md)."""
from __future__ import annotations

import argparse
from pathlib import Path

from msgldm_auto.cli._common import add_model_arguments, entry_point, print_roots


def build_export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msgldm_export_model_to_zip",
                                     description="Pack a trained model into one zip.")
    add_model_arguments(parser)
    parser.add_argument("-o", required=True, metavar="ZIP", help="zip file to write")
    return parser


@entry_point
def export_main(argv: list[str] | None = None) -> int:
    args = build_export_parser().parse_args(argv)
    from msgldm_auto.inference.model_loading import find_model_folder  # torch loads only now: instant --help
    from msgldm_auto.inference.model_zip import export_model_zip

    print_roots()
    model_folder = find_model_folder(args.dataset, args.configuration, args.plans)
    names = export_model_zip(model_folder, Path(args.o), args.folds, args.checkpoint)
    checkpoints = [n for n in names if n.endswith(".pth")]
    print(f"wrote {args.o}: {len(checkpoints)} checkpoint(s), {len(names)} file(s)")
    return 0


@entry_point
def install_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="msgldm_install_pretrained_model_from_zip",
                                     description="Install a model zip into MSGLDM_RESULTS.")
    parser.add_argument("zip", metavar="ZIP", help="file written by msgldm_export_model_to_zip")
    parser.add_argument("--overwrite", action="store_true", help="replace a model folder that is already installed")
    args = parser.parse_args(argv)
    from msgldm_auto.inference.model_zip import install_model_zip

    print_roots()
    for folder in install_model_zip(Path(args.zip), overwrite=args.overwrite):
        print(f"installed {folder}")
    return 0
