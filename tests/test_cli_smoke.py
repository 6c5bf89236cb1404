"""One subprocess smoke test per installed command: the console script exists, starts, and prints its usage."""
from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _console_scripts() -> list[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return [line.split("=")[0].strip() for line in lines if line.strip()]


def test_every_issue_command_is_declared():
    expected = {
        "msgldm_plan_and_preprocess", "msgldm_extract_fingerprint", "msgldm_plan_experiment", "msgldm_preprocess",
        "msgldm_train", "msgldm_predict", "msgldm_evaluate", "msgldm_make_demo_dataset", "msgldm_verify_dataset",
        "msgldm_convert", "msgldm_export_model_to_zip", "msgldm_install_pretrained_model_from_zip",
    }
    assert expected <= set(_console_scripts())


@pytest.mark.parametrize("command", _console_scripts())
def test_console_script_prints_usage(command):
    executable = Path(sys.executable).parent / command
    assert executable.exists(), f"{command} is not installed next to {sys.executable}: run `pip install -e .`"
    result = subprocess.run([str(executable), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


def test_help_of_the_inference_commands_loads_no_torch():
    """`msgldm_predict --help` must be instant: the CLI modules import torch/MONAI only once arguments are parsed."""
    code = ("import sys, msgldm_auto.cli.predict, msgldm_auto.cli.model_zip, msgldm_auto.cli.evaluate; "
            "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def _help_of(parser, flag: str) -> str:
    return next(a.help for a in parser._actions if flag in a.option_strings)


def test_shared_flags_are_spelled_and_explained_the_same_in_every_command():
    """`-d -c -p -f -chk` come from one helper (cli/_common.py), so their help text cannot drift apart."""
    from msgldm_auto.cli import model_zip, plan_and_preprocess, predict, train, verify_dataset

    parsers = {"predict": predict.build_parser(), "train": train.build_parser(),
               "verify": verify_dataset.build_parser(), "export": model_zip.build_export_parser(),
               "preprocess": plan_and_preprocess.build_preprocess_parser()}
    flags = {"-d": ("predict", "export", "verify", "preprocess"), "-p": ("predict", "export", "train", "preprocess"),
             "-c": ("predict", "export"), "-f": ("predict", "export"), "-chk": ("predict", "export")}
    for flag, commands in flags.items():
        texts = {_help_of(parsers[c], flag) for c in commands}
        assert len(texts) == 1, (flag, texts)
