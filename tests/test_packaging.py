"""`make demo` installs llmens editable: setuptools must build that wheel without its warning block."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_editable_wheel_is_a_plain_pth_and_setuptools_warns_nothing(tmp_path):
    """pip prints a BuildBackendWarning block when setuptools falls back to its meta path finder (packages at
    the root with no package-dir); a .pth naming the checkout needs no warning."""
    build = ("import sys, setuptools.build_meta as b; "
             "print(b.build_editable(sys.argv[1]))")
    res = subprocess.run([sys.executable, "-W", "always", "-c", build, str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Editable installation." not in res.stderr and "InformationOnly" not in res.stderr
    wheel = tmp_path / res.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as zf:
        pth = [n for n in zf.namelist() if n.endswith(".pth")]
        assert pth and zf.read(pth[0]).decode().strip() == str(REPO)


def test_what_llmens_leaves_in_a_checkout_is_ignored_by_git():
    """`llmens broker` keeps Kafka's log dir in .llmens-broker/, the demo its tables in .llmens-data/."""
    res = subprocess.run(["git", "check-ignore", "--no-index", ".llmens-broker/x", ".llmens-data/x"], cwd=REPO,
                         capture_output=True, text=True)
    assert res.stdout.split() == [".llmens-broker/x", ".llmens-data/x"]
