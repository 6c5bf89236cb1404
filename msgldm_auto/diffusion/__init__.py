"""Diffusion's one home: the DDIM noise scheduler, the training targets and loss, the DDIM sampling loop.

Training (`training/stages/ldm.py`) and inference (`inference/synthesis.py`, `inference/predictor.py`) both import
from here; nothing here imports training or inference. The modules are not re-exported: importing this package
stays cheap, and MONAI is loaded only by whoever needs the scheduler.
"""
