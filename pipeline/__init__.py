"""TensorRT engine build pipeline for the pyt-api-prod YOLO models."""
__version__ = "0.1.0"

# Before anything imports ultralytics: no `pip install` of what a checkpoint names (every stage).
from pipeline.checkpoint import harden_environment as _harden

_harden()
