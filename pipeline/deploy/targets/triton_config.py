"""A Triton ``config.pbtxt`` for one model, from what its engine sets record.

Field names and meanings follow Triton's ``model_config.proto``
(triton-inference-server/common): ``platform: "tensorrt_plan"``; ``max_batch_size`` 0
means the model does not batch and every dim is given, otherwise dims leave out the batch;
``cc_model_filenames`` maps a compute capability ("8.6") to a file in the version folder;
``parameters { key: "metadata" }`` is what Ultralytics' Triton client reads
(``ultralytics/utils/triton.py`` parses it with ``ast.literal_eval``, so it is written as a
Python literal: JSON's ``true``/``false``/``null`` would not parse there).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.errors import PipelineError
from pipeline.hardware import cc_tuple

# numpy dtype names (what stages/export.py records) -> Triton's DataType
DATA_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
              "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "int16": "TYPE_INT16", "uint16": "TYPE_UINT16",
              "int32": "TYPE_INT32", "uint32": "TYPE_UINT32", "int64": "TYPE_INT64", "uint64": "TYPE_UINT64",
              "bool": "TYPE_BOOL"}


@dataclass
class TritonModel:
    """One Triton model: one YOLO model, one plan per set, keyed by compute capability."""
    name: str
    io: dict                      # the manifest entry's io record
    batch: dict                   # the build's batch profile {min, opt, max}
    metadata: dict                # Ultralytics' metadata (the .engine header)
    cc_files: dict[str, str] = field(default_factory=dict)   # "8.6" -> plan file in the version folder
    default_file: str | None = None   # a portable set's plan (any compute capability it covers)


def quote(text: str) -> str:
    """A protobuf text-format string: printable ASCII as is, everything else as octal bytes."""
    out = []
    for b in text.encode("utf-8"):
        c = chr(b)
        out.append("\\" + c if c in '"\\' else c if 0x20 <= b < 0x7f else f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def metadata_literal(meta: dict) -> str:
    """Ultralytics' metadata as the Python literal its Triton client evaluates; class ids as ints
    (as Ultralytics writes them), the pipeline's own provenance left out (it differs per set)."""
    meta = {k: v for k, v in meta.items() if k != "engine_pipeline"}
    if isinstance(meta.get("names"), dict):
        meta["names"] = {int(k) if str(k).isdigit() else k: v for k, v in meta["names"].items()}
    return repr(meta)


def batching(model: TritonModel) -> int:
    """``max_batch_size``: 0 for a fixed batch (dims carry it), else the profile's max."""
    b = model.batch
    dynamic = not (b.get("min") == b.get("opt") == b.get("max"))
    if not dynamic:
        return 0
    for side in ("inputs", "outputs"):
        for t in model.io[side]:
            if not t["shape"] or isinstance(t["shape"][0], int):
                raise PipelineError(f"the batch profile is dynamic ({b}) but tensor {t['name']!r} has a fixed "
                                    f"first dimension {t['shape']}: Triton cannot batch it", model=model.name,
                                    fix="rebuild the model with a fixed `batch:` in models.yaml, or re-export it")
    return int(b["max"])


def _tensor(t: dict, model: str, batched: bool) -> str:
    dtype = DATA_TYPES.get(t["dtype"])
    if dtype is None:
        raise PipelineError(f"tensor {t['name']!r} has dtype {t['dtype']}, which Triton has no type for",
                            model=model, fix="report this with the model: its export records an unusual dtype")
    dims = [d if isinstance(d, int) else -1 for d in (t["shape"][1:] if batched else t["shape"])]
    return f"  {{ name: {quote(t['name'])} data_type: {dtype} dims: [ {', '.join(map(str, dims))} ] }}"


def render(model: TritonModel) -> str:
    """The config.pbtxt text."""
    mbs = batching(model)
    lines = [f"# written by `engines triton` from the engine sets' manifests; output layout: {model.io['layout']}",
             f"name: {quote(model.name)}", 'platform: "tensorrt_plan"', f"max_batch_size: {mbs}",
             "input ["]
    lines.append(",\n".join(_tensor(t, model.name, mbs > 0) for t in model.io["inputs"]))
    lines += ["]", "output ["]
    lines.append(",\n".join(_tensor(t, model.name, mbs > 0) for t in model.io["outputs"]))
    lines.append("]")
    if model.default_file:
        lines.append(f"default_model_filename: {quote(model.default_file)}")
    for cc, f in sorted(model.cc_files.items(), key=lambda kv: cc_tuple(kv[0])):
        lines.append(f"cc_model_filenames {{ key: {quote(cc)} value: {quote(f)} }}")
    # the engines hold one optimization profile (index 0), built for the batch profile
    lines.append('instance_group [ { kind: KIND_GPU count: 1 profile: [ "0" ] } ]')
    if mbs > 1:
        lines.append("dynamic_batching { }")
    lines.append(f"parameters {{ key: \"metadata\" value {{ string_value: {quote(metadata_literal(model.metadata))} }} }}")
    return "\n".join(lines) + "\n"
