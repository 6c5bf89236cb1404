"""`msgldm_convert <kind> SOURCE -d ID [--name NAME] [--copy|--link] [--overwrite]`: a downloaded dataset -> raw
dataset.

Exit status 0 when the new dataset passes the integrity check, 1 when it was written but the check found problems,
2 for a user error (nothing is written then).
"""
from __future__ import annotations

import argparse
import sys

from dataset_conversion.convert import FolderOptions, convert_dataset
from dataset_conversion.folder import parse_modality_options
from msgldm_auto.cli._common import entry_point, print_roots

KIND_HELP = {
    "brats2020": "BraTS 2020: BraTS20_Training_XXX/BraTS20_Training_XXX_{t1,t1ce,t2,flair,seg}.nii[.gz]",
    "brats2021": "BraTS 2021: BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz",
    "brats2023": "BraTS 2023 GLI: BraTS-GLI-XXXXX-XXX/BraTS-GLI-XXXXX-XXX-{t1n,t1c,t2w,t2f,seg}.nii.gz",
    "wmh2017": "MICCAI 2017 WMH: <site>/<id>/pre/{T1,FLAIR}.nii.gz and <site>/<id>/wmh.nii.gz",
    "ixi": "IXI: IXI-T1/, IXI-T2/, IXI-PD/ (T1 is registered onto the T2 grid)",
    "nnunet": "an nnU-Net v2 raw dataset folder (DatasetXXX_Name/)",
    "folder": "any folder: --modality NAME='GLOB' (repeat) [--case-id parent|REGEX] [--label 'GLOB']",
}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("source", metavar="SOURCE", help="the dataset as downloaded/extracted (never modified)")
    common.add_argument("-d", "--dataset-id", "--dataset_id", dest="dataset_id", type=int, required=True,
                        help="ID of the new dataset (DatasetXXX_Name)")
    common.add_argument("--name", help="name part of DatasetXXX_Name (default: one per kind)")
    mode = common.add_mutually_exclusive_group()
    mode.add_argument("--copy", dest="mode", action="store_const", const="copy", help="copy files (default)")
    mode.add_argument("--link", dest="mode", action="store_const", const="link",
                      help="symlink files that need no conversion (saves space; keep the source in place)")
    common.add_argument("--overwrite", action="store_true", help="replace an existing dataset of the same name")
    parser = argparse.ArgumentParser(prog="msgldm_convert", description="Convert a dataset into the msgldm raw format.")
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, help_text in KIND_HELP.items():
        sub = kinds.add_parser(kind, parents=[common], help=help_text, description=help_text)
        if kind == "folder":
            _add_folder_options(sub)
    return parser


def _add_folder_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--modality", action="append", default=[], metavar="NAME=GLOB",
                     help="one per channel, in channel order, e.g. --modality T1='*_t1w.nii.gz'")
    sub.add_argument("--case-id", "--case_id", dest="case_id",
                     help="'parent' (the parent folder's name) or a regex with one group; default: what the first '*' "
                          "matched")
    sub.add_argument("--label", help="glob of the label files, e.g. '*_seg.nii.gz' (optional)")


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    folder = None
    if args.kind == "folder":
        folder = FolderOptions(parse_modality_options(args.modality), args.case_id, args.label)
    print_roots()
    conversion = convert_dataset(args.kind, args.source, args.dataset_id, args.name, args.mode or "copy",
                                 args.overwrite, folder)
    print(conversion.summary)
    report = conversion.verification
    print("integrity check:")
    print(report.format() or "  no problems found")
    if not report.ok:
        print(f"converted, but the integrity check found problems (above); {conversion.result.dataset_folder} was kept")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
