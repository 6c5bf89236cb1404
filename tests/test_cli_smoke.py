"""Every console script of setup.cfg: its entry point imports, is callable and answers --help; --help stays instant."""
from __future__ import annotations

import configparser
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _console_scripts() -> dict[str, str]:
    """command -> "module:function", as setup.cfg declares them."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return {name.strip(): target.strip() for name, target in (line.split("=") for line in lines if line.strip())}


@pytest.mark.parametrize("command, target", sorted(_console_scripts().items()))
def test_console_script_resolves_to_a_callable_that_answers_help(command, target, capsys):
    module_name, _, function_name = target.partition(":")
    entry_point = getattr(importlib.import_module(module_name), function_name)
    assert callable(entry_point)
    with pytest.raises(SystemExit) as exit_info:
        entry_point(["--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {command} ")


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
