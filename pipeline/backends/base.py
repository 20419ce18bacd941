"""One runner interface for every runtime (Polygraphy's loader/runner split).

A runner is created cheaply, loads its model in ``activate()`` and maps a feed of
named numpy arrays to named numpy outputs in ``infer()``. Comparators only ever see
runners, so ONNX Runtime, PyTorch and TensorRT are interchangeable in every check.
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
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    @abstractmethod
    def activate(self) -> None: ...

    def deactivate(self) -> None:
        pass

    @abstractmethod
    def inputs(self) -> list[TensorSpec]: ...

    @abstractmethod
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
