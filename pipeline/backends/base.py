"""One runner interface for every runtime, loaders apart from runners (Polygraphy's split).

A *loader* is a callable that does the expensive, runtime-specific creation (an ONNX
Runtime session, a deserialized TensorRT engine); a *runner* takes a loader, calls it in
``activate()``, maps a feed of named numpy arrays to named numpy outputs in ``infer()``,
and releases everything it holds in ``close()``. Comparators only ever see runners, so
ONNX Runtime, PyTorch and TensorRT are interchangeable in every check.

Contract: use a runner as a context manager (``with Runner(...) as r:``) or call
``close()`` in a ``finally``. ``close()`` is idempotent and also runs when ``activate()``
fails half-way, so nothing a failed activation created is left behind.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple          # ints, or str for symbolic dims
    dtype: str            # numpy dtype name

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


class Runner(ABC):
    name = "runner"

    def __enter__(self) -> Runner:
        try:
            self.activate()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abstractmethod
    def activate(self) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Release the session/engine/device memory; safe to call twice or before activate()."""

    @abstractmethod
    def inputs(self) -> list[TensorSpec]: ...

    @abstractmethod
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
