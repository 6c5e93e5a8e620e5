"""A settings file that is missing, does not parse or does not validate: one line naming the file, the line and
the field, exit 2, for `worker` and `publish` alike (before: a 50-200 line traceback naming `<byte string>`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from streams.cli import app
from streams.settings import SettingsFileError, parse_config_bytes
from tests.conftest import DEMO_PRODUCTS

CASES = {
    "unparsable.yaml": ("kafka:\n  bootstrap: 127.0.0.1:9092\n  topic_prefix: [a\nllms: []\n",
                        ":4: not valid YAML"),
    "unparsable.toml": ("[kafka\nbootstrap = 1\n", ":1: not valid TOML"),
    "invalid.yaml": ("kafka:\n  bootstrap: 127.0.0.1:9092\ntopics:\n  partitions: zero\n",
                     ":4: topics.partitions: Input should be a valid integer"),
    "invalid.toml": ('[kafka]\nbootstrap = "x"\n\n[topics]\nreplication = 0\n',
                     ":5: topics.replication: Input should be greater than or equal to 1"),
    "invalid_llm.yaml": ("llms:\n  - name: a\n    provider: nosuch\n    base_url: http://x\n    model: m\n",
                         ":3: llms.0.provider: Input should be 'openai'"),
    "not_a_mapping.yaml": ("- just\n- a list\n", ":1: the settings file must hold a mapping"),
}


@pytest.fixture(autouse=True)
def _own_config_variable(monkeypatch):
    monkeypatch.setenv("LLMENS_CONFIG", "")  # load_settings sets it: restored after each test


@pytest.mark.parametrize("command", [["worker"], ["publish", str(DEMO_PRODUCTS)]])
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_bad_settings_file_is_one_line_with_file_line_and_field_and_exit_2(tmp_path, command, name):
    text, expected = CASES[name]
    path = tmp_path / name
    path.write_text(text)
    res = CliRunner().invoke(app, [*command, "--config", str(path)])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}{expected}"), res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("command", [["worker"], ["publish", str(DEMO_PRODUCTS)]])
def test_a_missing_settings_file_is_named_and_exit_2(tmp_path, command):
    res = CliRunner().invoke(app, [*command, "--config", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and res.output.strip() == f"error: {tmp_path / 'nope.yaml'}: settings file not found"


@given(st.binary(max_size=200))
def test_any_bytes_either_parse_to_a_mapping_or_raise_the_one_readable_error(data):
    from pathlib import Path

    for suffix in (".yaml", ".toml"):
        path = Path(f"settings{suffix}")
        try:
            parsed = parse_config_bytes(data, path)
        except SettingsFileError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        else:
            assert isinstance(parsed, dict)
