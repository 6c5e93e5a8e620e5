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
