"""Entry point (not built yet)."""
from msgldm_auto.cli._common import entry_point, not_built_yet


@entry_point
def main(argv=None):
    return not_built_yet("msgldm_predict_main")
