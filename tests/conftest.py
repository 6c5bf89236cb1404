"""Shared fixtures: every test gets its own data roots; torch runs single-threaded to share the 2 CI cores fairly."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MSGLDM_NUM_WORKERS", "0")


@pytest.fixture
def msgldm_roots(tmp_path, monkeypatch):
    """Point MSGLDM_HOME (and so all three roots) at a fresh temporary folder."""
    home = tmp_path / "msgldm_home"
    monkeypatch.setenv("MSGLDM_HOME", str(home))
    for var in ("MSGLDM_RAW", "MSGLDM_PREPROCESSED", "MSGLDM_RESULTS"):
        monkeypatch.delenv(var, raising=False)
    return home


TINY_DEMO = dict(dataset_id=901, name="Demo", cases=6, test_cases=2, seed=0, resolution_mm=4.0)


@pytest.fixture(scope="session")
def _tiny_demo_dataset_master(tmp_path_factory):
    """Built once per test session (it is deterministic); `tiny_demo_dataset` hands each test its own copy."""
    from dataset_conversion.demo_dataset import make_demo_dataset

    raw = tmp_path_factory.mktemp("tiny_demo_raw")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MSGLDM_RAW", str(raw))
        return make_demo_dataset(**TINY_DEMO)


@pytest.fixture
def tiny_demo_dataset(msgldm_roots, _tiny_demo_dataset_master):
    """A tiny demo dataset (ID 901: 6 training + 2 test cases at 4 mm, T1/T2/FLAIR/PD, lesion labels) in the test's raw
    root.

    Returns its folder, `<raw root>/Dataset901_Demo`. Case demo_003 misses one contrast; imagesTs cases hold some out.
    """
    import shutil

    from msgldm_auto.paths import raw_root

    target = raw_root() / _tiny_demo_dataset_master.name
    shutil.copytree(_tiny_demo_dataset_master, target)
    return target


TINY_TRAINING = ["-p", "MSGLDMPlans_cpu", "-device", "cpu", "--epochs", "1", "--iters-per-epoch", "2",
                 "--val-cases", "1", "--no-progress"]


@pytest.fixture(scope="session")
def _tiny_trained_home_master(tmp_path_factory, _tiny_demo_dataset_master):
    """Built once per test session: the tiny demo planned (cpu preset), preprocessed, fold 0 trained 2 iterations."""
    import shutil

    from msgldm_auto.cli import plan_and_preprocess, train

    home = tmp_path_factory.mktemp("tiny_trained_home")
    shutil.copytree(_tiny_demo_dataset_master, home / "raw" / _tiny_demo_dataset_master.name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MSGLDM_HOME", str(home))
        for var in ("MSGLDM_RAW", "MSGLDM_PREPROCESSED", "MSGLDM_RESULTS"):
            patch.delenv(var, raising=False)
        assert plan_and_preprocess.main(["-d", "901", "-pl", "cpu", "-np", "1"]) == 0
        assert train.main(["901", "2d", "0", *TINY_TRAINING]) == 0
    return home


@pytest.fixture
def tiny_trained_demo(msgldm_roots, _tiny_trained_home_master):
    """A copy of the session's trained tiny demo in the test's own roots; returns the model folder
    `<results>/Dataset901_Demo/MSGLDMPlans_cpu__2d` (fold_0 trained, with its validation)."""
    import shutil

    shutil.copytree(_tiny_trained_home_master, msgldm_roots, dirs_exist_ok=True)
    return msgldm_roots / "results" / "Dataset901_Demo" / "MSGLDMPlans_cpu__2d"
