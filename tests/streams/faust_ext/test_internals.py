"""Every faust / aiokafka internal llmens relies on exists in the installed versions (fails loudly on upgrade)."""

from __future__ import annotations

from importlib.metadata import version

import faust
import pytest

from streams.faust_ext import internals
from streams.faust_ext.transport import install_transport


def test_every_listed_internal_exists_in_the_installed_faust_and_aiokafka():
    missing = internals.missing_internals()
    assert missing == [], (f"faust/aiokafka changed: {missing}; re-check streams/faust_ext against "
                           f"{ {p: version(p) for p in internals.CHECKED_ON} }")


def test_the_list_was_checked_on_the_installed_versions():
    installed = {p: version(p) for p in internals.CHECKED_ON}
    assert installed == internals.CHECKED_ON, "update CHECKED_ON after re-checking every entry of INTERNALS"


def test_a_missing_internal_is_found_and_the_transport_refuses_to_start(monkeypatch):
    monkeypatch.setattr(internals, "INTERNALS", [*internals.INTERNALS,
                                                 ("faust.transport.consumer:Consumer", "_no_such_thing", "test")])
    assert internals.missing_internals() == ["faust.transport.consumer:Consumer._no_such_thing"]
    app = faust.App("internals-test", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    with pytest.raises(RuntimeError, match="_no_such_thing"):
        install_transport(app)
