"""The shape of the package: layers, no import circle, the library never imports click.

Every import counts, at the top of a file or inside a function: a function-level import
is still a dependency, only a later one.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "pipeline"

# Lower layers never import higher ones; within a layer, no circle.
LAYERS = [
    ("errors", "fsutil", "status"),
    ("hardware", "builders", "runtime", "engine_file", "manifest", "checkpoint", "video_frames"),
    ("engine_set", "config", "tasks"),
    ("checks", "backends"),
    ("stages", "docker_runner", "registry"),
    ("deploy", "fleet"),
    ("api",),
    ("cli", "__main__"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """Every pipeline module ``path`` imports, wherever the import statement is."""
    me = module_name(path)
    pkg = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            subs = {f"{mod}.{a.name}" for a in node.names} & MODULES.keys()
            # `from pkg import module` depends on that module; the package's __init__ runs
            # first for any import, so it is not counted as an edge of its own
            out |= subs if subs else ({mod} & MODULES.keys())
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in MODULES)
    out.discard(me)
    return out


def layer_of(mod: str) -> int:
    top = mod.split(".")[1] if mod.count(".") else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{mod} belongs to no layer: add it to LAYERS in {Path(__file__).name}")


GRAPH = {m: imports_of(p) for m, p in MODULES.items() if m != "pipeline"}


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_layers():
    wrong = [f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
             for m, deps in GRAPH.items() for d in deps if d != "pipeline" and layer_of(d) > layer_of(m)]
    assert not wrong, "\n".join(wrong)


def test_the_import_graph_read_with_every_import_has_no_circle():
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(GRAPH.get(m, ())):
            assert state.get(d) != 1, f"import circle: {' -> '.join(path + [m, d])}"
            if d not in state:
                visit(d, path + [m])
        state[m] = 2
    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [])


def test_a_function_level_import_is_seen_by_the_graph(tmp_path):
    # the reader must see imports inside functions, or the circle test proves nothing
    probe = tmp_path / "pipeline" / "probe.py"
    probe.parent.mkdir()
    probe.write_text("def f():\n    if True:\n        from pipeline.deploy import rules\n")
    import sys
    me = sys.modules[__name__]
    old = me.REPO
    try:
        me.REPO = tmp_path
        assert imports_of(probe) == {"pipeline.deploy.rules"}
    finally:
        me.REPO = old


def test_the_library_never_imports_click():
    offenders = []
    for m, p in MODULES.items():
        if m.startswith("pipeline.cli"):
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            offenders += [f"{m} imports {n}" for n in names if n.split(".")[0] == "click"]
    assert not offenders, offenders


def test_the_transport_knows_nothing_of_deploy_and_runtime_nothing_of_docker():
    registry = {m: deps for m, deps in GRAPH.items() if m.startswith("pipeline.registry")}
    assert {"pipeline.registry.client", "pipeline.registry.sets"} <= registry.keys()
    assert not {d for deps in registry.values() for d in deps if d.startswith("pipeline.deploy")}
    # the OCI client moves blobs and manifests; what an engine set is as an artifact is sets' alone
    assert not {d for d in GRAPH["pipeline.registry.client"] if d != "pipeline.errors"}
    assert "pipeline.docker_runner" not in GRAPH["pipeline.runtime"]
    assert "pipeline.stages.verify" not in GRAPH["pipeline.stages.bench"]


def test_the_tests_mirror_the_package():
    """tests/<folder>/ holds the tests of pipeline/<folder>/ (tests/data holds fixtures)."""
    folders = {p.name for p in (REPO / "tests").iterdir() if p.is_dir() and not p.name.startswith((".", "__"))}
    assert {"cli", "deploy", "fleet", "stages"} <= folders
    assert not [f for f in folders - {"data"} if not (PKG / f).is_dir()], folders
