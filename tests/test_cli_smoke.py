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
