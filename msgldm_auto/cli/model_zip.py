"""Entry point (not built yet)."""
from msgldm_auto.cli._common import entry_point, not_built_yet


@entry_point
def export_main(argv=None):
    return not_built_yet("msgldm_model_zip_export_main")


@entry_point
def install_main(argv=None):
    return not_built_yet("msgldm_model_zip_install_main")
