"""msgldm_auto: self-configuring multimodal MRI synthesis with MSG-LDM."""

__version__ = "0.1.0"
