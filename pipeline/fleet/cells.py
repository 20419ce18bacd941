"""The GPU list (``--gpus`` of `engines fleet plan` and `engines fleet status`): one reader.

Bytes to YAML with the checks a hand-written or generated file needs before anything
walks it: at most ``MAX_BYTES``, UTF-8 text, nesting at most ``MAX_DEPTH`` deep (PyYAML
composes nodes recursively: 50,000 nested ``[`` would end in a RecursionError), and each
key once per mapping (YAML would silently keep the last). Every problem is a
``PipelineError`` naming the file, with the next step; what the keys mean is the
business of plan.py and status.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import UniqueKeyLoader
from pipeline.errors import PipelineError

MAX_BYTES = 1 << 20        # a GPU list names a few dozen cells: a megabyte is far more than any needs
MAX_DEPTH = 32             # the deepest real list is 3 (top level, cells, a cell)
UTF8_FIX = ("save the GPU list as UTF-8 text (YAML or JSON), e.g. `iconv -f latin1 -t utf-8 FILE > NEW`; "
            "a binary file is not a GPU list")


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PipelineError(f"the GPU list is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} cannot be "
                            "decoded (a binary file, or one saved as latin-1 or another encoding)", file=path,
                            fix=UTF8_FIX) from None


def _check_depth(text: str, path: Path, loader) -> None:
    """Walk the parser's events (PyYAML's parser is a state machine, not recursive) and stop
    at the first collection nested deeper than MAX_DEPTH, before the recursive composer runs."""
    import yaml
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise PipelineError(f"the GPU list nests lists or mappings more than {MAX_DEPTH} deep (line "
                                    f"{event.start_mark.line + 1}, column {event.start_mark.column + 1})", file=path,
                                    fix="write the GPU list as a mapping with `cells:`, a list of flat "
                                        "{gpu: ..., image: ..., trt: ...} entries (or a plain list of cells)")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def read_gpu_list(path: Path | str) -> tuple[str, Any]:
    """(text, data) of the GPU list at ``path``; a PipelineError for anything that is no
    readable, sane YAML document."""
    import yaml
    path = Path(path)
    try:
        with open(path, "rb") as fd:
            raw = fd.read(MAX_BYTES + 1)
    except OSError as exc:
        raise PipelineError(f"cannot read the GPU list ({exc.strerror or exc})", file=path,
                            fix="check the path and that this user may read it") from None
    if len(raw) > MAX_BYTES:
        raise PipelineError(f"the GPU list is larger than {MAX_BYTES >> 20} MiB", file=path,
                            fix="pass the GPU list itself (a few lines per cell), not another file")
    text = _decode(raw, path)
    loader = UniqueKeyLoader   # one YAML loader for every hand-written file: a key given twice is refused
    try:
        _check_depth(text, path, loader)
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        raise PipelineError(f"the GPU list is not valid YAML: {exc}", file=path,
                            fix="fix the YAML syntax at the line named (each key once per mapping)") from None
    except RecursionError:   # a backstop: the depth check should already have caught it
        raise PipelineError("the GPU list nests too deep to read", file=path,
                            fix="write the GPU list as a mapping with `cells:`, a list of flat entries") from None
    return text, data
