"""TensorRT engine build pipeline for the pyt-api-prod YOLO models."""
__version__ = "0.1.0"
