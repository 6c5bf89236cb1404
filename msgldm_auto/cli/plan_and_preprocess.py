"""Entry point (not built yet)."""
from msgldm_auto.cli._common import entry_point, not_built_yet


@entry_point
def main(argv=None):
    return not_built_yet("msgldm_plan_and_preprocess_main")


@entry_point
def extract_fingerprint_main(argv=None):
    return not_built_yet("msgldm_plan_and_preprocess_extract_fingerprint_main")


@entry_point
def plan_experiment_main(argv=None):
    return not_built_yet("msgldm_plan_and_preprocess_plan_experiment_main")


@entry_point
def preprocess_main(argv=None):
    return not_built_yet("msgldm_plan_and_preprocess_preprocess_main")
