"""What an export leaves under ``models/onnx/``: the file names (spelt here only) and the
record, parsed once into a typed object that the run hands from stage to stage.

Per model, mirroring the source layout (``<stem>`` is the source path without ``.pt``):
``<stem>.onnx`` (FP32), ``<stem>.fp16.onnx``, ``<stem>.int8.onnx`` and its calibration record
``<stem>.int8.json`` (precision int8), ``<stem>.export.json`` (the export record) and
``<stem>.accuracy.json`` (the accuracy gate's cached figures).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import Config, ModelSpec

RECORD_SUFFIX = ".export.json"
_SUFFIX = {"fp32": ".onnx", "fp16": ".fp16.onnx", "int8": ".int8.onnx", "int8_record": ".int8.json",
           "record": RECORD_SUFFIX, "accuracy": ".accuracy.json"}
ONNX_KINDS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class OnnxFiles:
    """Every file of one model under ``models/onnx/``; ``base`` is ``<onnx dir>/<stem>``."""
    base: Path

    @classmethod
    def of(cls, cfg: Config, spec: ModelSpec) -> OnnxFiles:
        return cls(cfg.onnx_dir / spec.stem)

    @classmethod
    def of_record(cls, record_file: Path) -> OnnxFiles:
        """The family a ``<stem>.export.json`` found on disk belongs to."""
        name = str(record_file)
        if not name.endswith(RECORD_SUFFIX):
            raise ValueError(f"not an export record: {record_file}")
        return cls(Path(name[: -len(RECORD_SUFFIX)]))

    @classmethod
    def of_fp32(cls, fp32: Path) -> OnnxFiles:
        """The family of an FP32 ONNX (``<stem>.onnx``)."""
        return cls(fp32.with_suffix(""))

    def _file(self, kind: str) -> Path:
        return Path(f"{self.base}{_SUFFIX[kind]}")

    fp32 = property(lambda self: self._file("fp32"))
    fp16 = property(lambda self: self._file("fp16"))
    int8 = property(lambda self: self._file("int8"))
    int8_record = property(lambda self: self._file("int8_record"))
    record = property(lambda self: self._file("record"))
    accuracy = property(lambda self: self._file("accuracy"))

    def onnx(self, kind: str) -> Path:
        """The ONNX an engine is built from: fp32, fp16 or int8 (the Q/DQ twin of stages.quantize)."""
        if kind not in ONNX_KINDS:
            raise ValueError(f"no ONNX of kind {kind!r} (one of {', '.join(ONNX_KINDS)})")
        return self._file(kind)

    def every(self) -> list[Path]:
        """Every file name of the family (what `engines clean` removes for a model)."""
        return [self._file(k) for k in _SUFFIX]


@dataclass(frozen=True)
class Tensor:
    """One ONNX input or output: name, shape (a str for a dynamic axis) and numpy dtype name."""
    name: str
    shape: tuple[int | str, ...]
    dtype: str

    @classmethod
    def from_json(cls, d: Mapping) -> Tensor:
        return cls(str(d["name"]), tuple(d.get("shape") or ()), str(d.get("dtype", "")))

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass
class ExportRecord(Mapping):
    """One model's export, parsed once from ``<stem>.export.json`` (or made by the export):
    the spec it was exported for (precision resolved), the files, their hashes, the I/O and
    Ultralytics' ONNX metadata. ``int8`` is the INT8 twin's record once it is calibrated.

    Read-only mapping access (``record["io"]``) gives the JSON as written, for the checks and
    tests that read records as documents."""
    spec: ModelSpec
    files: OnnxFiles
    data: dict = field(repr=False)        # the record as written to <stem>.export.json
    status: str = "cached"                # cached | exported
    int8: dict | None = None
    inputs: tuple[Tensor, ...] = ()
    outputs: tuple[Tensor, ...] = ()

    @classmethod
    def parse(cls, spec: ModelSpec, files: OnnxFiles, data: dict, status: str = "cached") -> ExportRecord:
        io = data.get("io") or {}
        return cls(spec, files, data, status, data.get("int8"),
                   tuple(Tensor.from_json(t) for t in io.get("inputs", ())),
                   tuple(Tensor.from_json(t) for t in io.get("outputs", ())))

    @property
    def model(self) -> str:
        return self.spec.name

    @property
    def cache_key(self) -> str:
        return self.data["cache_key"]

    @property
    def sha256(self) -> dict[str, str]:
        """source, fp32 and fp16 digests (as hashed by the export or its cache check)."""
        return self.data["sha256"]

    @property
    def metadata(self) -> dict:
        return self.data.get("metadata", {})

    @property
    def demo(self) -> bool:
        return bool(self.data.get("demo", False))

    @property
    def trusted(self) -> bool:
        return bool(self.data.get("trusted", False))

    def onnx_sha256(self, kind: str) -> str | None:
        """The digest of the ONNX of ``kind`` this record vouches for."""
        if kind == "int8":
            return (self.int8 or {}).get("sha256")
        return self.sha256.get(kind)

    def to_json(self) -> dict:
        out = {**self.data, "model": self.model, "status": self.status}
        if self.int8 is not None:
            out["int8"] = self.int8
            out["files"] = {**out.get("files", {}), "int8": self.int8.get("file")}
        return out

    # Mapping view over to_json()
    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())
