"""The shape of the code base: small functions, imports that only run downwards."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNTIME = ("streams/app.py", "streams/decider.py", "streams/outputs.py", "streams/state.py", "streams/worker.py",
           "streams/feedback.py", "streams/watchdog.py", "streams/views.py", "streams/learner.py",
           "streams/models.py", "streams/topics.py", "streams/metrics.py", "streams/lag.py", "streams/offsets.py",
           "streams/settings.py", "streams/reconfig.py")


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_no_function_in_the_library_or_the_stream_is_over_80_lines():
    long = [(str(p.relative_to(REPO)), name, n) for pkg in ("llmens_core", "streams")
            for p in sorted((REPO / pkg).rglob("*.py")) for name, n in _functions(p) if n > 80]
    assert long == []


def test_the_library_knows_nothing_of_kafka_faust_or_the_stream():
    bad = [(str(p.relative_to(REPO)), m) for p in sorted((REPO / "llmens_core").rglob("*.py"))
           for m in _imports(p) if m.split(".")[0] in {"streams", "faust", "aiokafka", "confluent_kafka"}]
    assert bad == []


def test_the_runtime_never_imports_the_harness_or_the_cli():
    bad = [(f, m) for f in RUNTIME for m in _imports(REPO / f)
           if m.startswith(("streams.harness", "streams.cli"))]
    assert bad == []


def test_faust_extensions_import_no_other_part_of_the_stream():
    bad = [(str(p.relative_to(REPO)), m) for p in sorted((REPO / "streams" / "faust_ext").rglob("*.py"))
           for m in _imports(p) if m.startswith("streams.") and not m.startswith(("streams.faust_ext", "streams.offsets"))]
    assert bad == []


AGGREGATION = REPO / "llmens_core" / "aggregation"


def _aggregation_layers() -> dict[str, int]:
    """Module -> its layer, read from the picture in the package docstring (one line per layer, top first)."""
    doc = ast.get_docstring(ast.parse((AGGREGATION / "__init__.py").read_text()))
    block = doc.split("::", 1)[1].strip("\n").splitlines()
    layers: dict[str, int] = {}
    base = len(block[0]) - len(block[0].lstrip())
    rank = -1
    for line in block:
        if not line.strip():
            break
        indent = len(line) - len(line.lstrip())
        if indent > base + 2:  # a description's second line
            continue
        rank += indent == base  # two more spaces: the layer above goes on
        for name in line.strip().split("  ", 1)[0].split(","):
            if name.strip():
                layers[name.strip()] = rank
    return layers


def _runtime_imports(path: Path) -> set[str]:
    """Modules imported by ``path`` at run time (not under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_the_aggregation_package_picture_names_every_module_and_imports_only_flow_down():
    layers = _aggregation_layers()
    modules = {p.stem for p in AGGREGATION.glob("*.py")} - {"__init__"}
    assert set(layers) == modules
    upward = [(p.stem, m.rsplit(".", 1)[1]) for p in sorted(AGGREGATION.glob("*.py")) if p.stem in layers
              for m in _runtime_imports(p) if m.startswith("llmens_core.aggregation.")
              and m.rsplit(".", 1)[1] in layers and layers[m.rsplit(".", 1)[1]] > layers[p.stem]]
    assert upward == []


def test_no_function_in_the_aggregation_is_over_60_lines_and_no_class_over_400():
    long = [(p.name, node.name, node.end_lineno - node.lineno + 1) for p in sorted(AGGREGATION.glob("*.py"))
            for node in ast.walk(ast.parse(p.read_text()))
            if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60)
            or (isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno >= 400)]
    assert long == []
