"""The shape of the package: layers, no import circle, the library never imports click, and
the tests mirroring the package file by file.

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


# The mirror, file by file: pipeline/a/b.py is tested in tests/a/test_b.py, pipeline/b.py in
# tests/test_b.py, a package's __init__.py that holds code in tests/<pkg>/test_<pkg>.py
# (__main__: tests/test_main.py). A module whose tests live elsewhere is listed here with the
# files that hold them and why; giving it a file of its own means removing its line.
TESTED_ELSEWHERE = {
    # the environment hardening (YOLO_AUTOINSTALL) is a security property, tested with the others
    "pipeline": ["tests/test_security.py"],
    # the Runner interface is held by every runner's tests (loader apart, close() on every path)
    "pipeline.backends.base": ["tests/backends/test_onnxruntime.py", "tests/backends/test_tensorrt_runner.py"],
    # the PyPI-less TensorRT API is held against its published stubs and names in one file
    "pipeline.builders.build_plan": ["tests/backends/test_tensorrt_api.py"],
    # the torch runner loads checkpoints: the safe loader's tests are its tests
    "pipeline.backends.torch": ["tests/test_security.py"],
    "pipeline.checkpoint": ["tests/test_security.py"],
    # the BUILDERS list is the interface's subject
    "pipeline.builders": ["tests/builders/test_base.py"],
    # the timing cache shared by container uids
    "pipeline.builders.timing_cache": ["tests/test_builder_container.py", "tests/builders/test_base.py"],
    # comparisons and decoders run on real exports of every task and head (one per family)
    "pipeline.tasks": ["tests/tasks/test_families.py"],
    "pipeline.checks.detections": ["tests/tasks/test_families.py", "tests/stages/test_build.py"],
    # parity is the export's gate, judged on real exports
    "pipeline.stages.parity": ["tests/stages/test_export.py", "tests/tasks/test_families.py"],
    # INT8 is quantizer, build and accuracy gate together, on real models
    "pipeline.stages.quantize": ["tests/stages/test_precision.py"],
    # command modules are thin: each is tested through its command, with its library call
    "pipeline.cli.fleet": ["tests/fleet/test_plan.py", "tests/registry/test_sets.py"],
    "pipeline.cli.registry": ["tests/registry/test_sets.py", "tests/registry/test_client.py"],
    "pipeline.cli.resolve": ["tests/deploy/test_resolve.py"],
    "pipeline.cli.stages": ["tests/cli/test_run_cli.py", "tests/stages/test_build.py"],
    # `engines resolve` end to end: the rules, the pick and the hand-over over hash-consistent sets
    "pipeline.deploy.pick": ["tests/deploy/test_resolve.py", "tests/deploy/targets/test_targets.py"],
    "pipeline.deploy.handover": ["tests/deploy/test_resolve.py"],
    "pipeline.deploy.compose_mounts": ["tests/deploy/targets/test_targets.py", "tests/test_builder_container.py"],
    # the targets' interface and the two small writers are tested as the list they form
    "pipeline.deploy.targets.base": ["tests/deploy/targets/test_targets.py"],
    "pipeline.deploy.targets.compose": ["tests/deploy/targets/test_targets.py"],
    "pipeline.deploy.targets.env_file": ["tests/deploy/targets/test_targets.py", "tests/deploy/test_resolve.py"],
    "pipeline.fleet.status": ["tests/registry/test_sets.py", "tests/fleet/test_cells.py"],
    # the .engine header is held against Ultralytics' own reader on real builds
    "pipeline.engine_file": ["tests/stages/test_build.py", "tests/tasks/test_families.py"],
    # the small shared modules every layer uses, tested through their users
    "pipeline.fsutil": ["tests/test_builder_container.py", "tests/test_security.py", "tests/test_api.py"],
}
# Test files named for a behaviour across modules rather than for one module.
ACROSS_MODULES = {
    "tests/test_structure.py": "the package's shape",
    "tests/test_builder_container.py": "the container files without a daemon: Dockerfile, compose, Makefile",
    "tests/test_docker.py": "the builder container against a real Docker Engine (docker_runner, cli.docker)",
    "tests/test_hardening.py": "issue 17's failure paths across stages",
    "tests/test_security.py": "checkpoint trust across export, build and bench",
    "tests/backends/test_tensorrt_api.py": "the full TensorRT API the builders and runner call",
    "tests/cli/test_cli_options.py": "environment variables of every command's options",
    "tests/cli/test_run_cli.py": "`engines run` end to end on real builds",
    "tests/deploy/test_resolve.py": "`engines resolve` end to end",
    "tests/stages/test_precision.py": "INT8 and the accuracy gate end to end",
    "tests/tasks/test_families.py": "every task and head type end to end",
}


def mirror_file(mod: str) -> Path:
    parts = mod.split(".")[1:]
    if MODULES[mod].name == "__init__.py":
        return REPO / "tests" / Path(*parts) / f"test_{parts[-1] if parts else 'pipeline'}.py"
    if parts == ["__main__"]:
        return REPO / "tests" / "test_main.py"
    return REPO / "tests" / Path(*parts[:-1]) / f"test_{parts[-1]}.py"


def holds_code(path: Path) -> bool:
    """More than a docstring (an empty package __init__ needs no tests)."""
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) and
               not (isinstance(n, ast.ImportFrom) and n.module == "__future__") for n in body)


def test_every_module_has_its_test_file_or_says_where_its_tests_are():
    missing = [f"{m}: no {mirror_file(m).relative_to(REPO)}" for m in sorted(MODULES)
               if holds_code(MODULES[m]) and not mirror_file(m).is_file() and m not in TESTED_ELSEWHERE]
    assert not missing, ("write the test file, or list the module in TESTED_ELSEWHERE with where its tests are:\n"
                         + "\n".join(missing))
    stale = [m for m in TESTED_ELSEWHERE if m not in MODULES or mirror_file(m).is_file()]
    assert not stale, f"TESTED_ELSEWHERE lists modules that are gone or have their own test file now: {stale}"
    gone = [f for files in TESTED_ELSEWHERE.values() for f in files if not (REPO / f).is_file()]
    assert not gone, f"TESTED_ELSEWHERE names test files that do not exist: {gone}"


def test_every_test_file_is_named_for_a_module_or_says_what_it_covers():
    mirrors = {mirror_file(m) for m in MODULES}
    stray = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                   if p not in mirrors and str(p.relative_to(REPO)) not in ACROSS_MODULES)
    assert not stray, f"test files named for no module (rename, or list them in ACROSS_MODULES): {stray}"
    assert not [f for f in ACROSS_MODULES if not (REPO / f).is_file()]
