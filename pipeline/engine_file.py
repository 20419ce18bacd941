"""The .engine format Ultralytics reads: 4-byte little-endian length, UTF-8 JSON
metadata, then the serialized plan. A raw .plan (no header) serves Triton/trtexec."""
from __future__ import annotations

import ast
import json
from pathlib import Path

# Ultralytics keeps Python literals as strings in ONNX metadata_props.
_LITERAL_KEYS = {"stride", "names", "imgsz", "batch", "kpt_shape", "channels", "end2end", "args"}


def metadata_from_onnx(props: dict[str, str]) -> dict:
    meta: dict = {}
    for k, v in props.items():
        if k in _LITERAL_KEYS:
            try:
                meta[k] = ast.literal_eval(v)
                continue
            except (ValueError, SyntaxError):
                pass
        meta[k] = v
    return meta


def engine_bytes(plan: bytes, metadata: dict) -> bytes:
    meta = json.dumps(metadata, default=str).encode()
    return len(meta).to_bytes(4, byteorder="little", signed=True) + meta + plan


def read_engine(path: Path) -> tuple[dict, bytes]:
    """(metadata, plan) of an .engine file; ({}, whole file) when it has no header."""
    data = Path(path).read_bytes()
    n = int.from_bytes(data[:4], "little")
    if 0 < n <= len(data) - 4:
        try:
            return json.loads(data[4:4 + n]), data[4 + n:]
        except ValueError:
            pass
    return {}, data
