"""`llmens publish` and `llmens tail` against the embedded broker, and the product file readers."""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.harness.publishing import (
    DEFAULT_VERSION,
    ReadErrors,
    iter_products,
    publish_products,
    read_products,
)


def _create(bootstrap: str, topic: str, partitions: int = 3) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(10)


def test_read_jsonl_and_csv(tmp_path):
    j = tmp_path / "p.jsonl"
    j.write_text(
        '{"product_id": "a", "title": "Red shoe", "attributes": {"color_family": "red"}}\n'
        "\n"
        '{"product_id": "b", "version": 3, "title": "Blue hat", "extra": 1}\n'
        "not json\n"
        '{"product_id": "c", "version": "x", "title": "t"}\n'
        '{"title": "no id"}\n'
    )
    errors = ReadErrors()
    recs = list(read_products(j, errors=errors))
    assert [r["product_id"] for r in recs] == ["a", "b"]
    assert recs[0]["version"] == DEFAULT_VERSION and recs[0]["attributes"] == ["color_family"]
    assert recs[1]["version"] == 3 and recs[1]["extra"] == 1
    assert [n for n, _ in errors] == [4, 5, 6]
    assert "version" in dict(errors.items)[5] and "product_id" in dict(errors.items)[6]

    c = tmp_path / "p.csv"
    c.write_text(
        "product_id,version,title,description,category,attributes\n"
        'p1,2,"Shoe, red",,Shoes,gender;color_family\n'
        "p2,,Hat,warm,,\n"
        "p3,abc,Bad,,,\n"
    )
    rows = list(iter_products(c))
    assert [(n, r and r["product_id"], e is None) for n, r, e in rows] == [
        (2, "p1", True), (3, "p2", True), (4, None, False)]
    p1, p2 = rows[0][1], rows[1][1]
    assert p1["title"] == "Shoe, red" and p1["version"] == 2 and p1["attributes"] == ["gender", "color_family"]
    assert p1["description"] is None and p1["category"] == "Shoes"
    assert p2["version"] == DEFAULT_VERSION and p2["attributes"] is None and p2["description"] == "warm"


@pytest.mark.integration
def test_publish_cli_then_tail(broker, topic_prefix, tmp_path):
    topic = f"{topic_prefix}product-updates"
    _create(broker.bootstrap, topic)
    f = tmp_path / "products.jsonl"
    lines = [orjson.dumps({"product_id": f"p{i}", "title": f"Product {i}", "version": 1}).decode() for i in range(50)]
    lines.insert(10, "{broken")
    f.write_text("\n".join(lines) + "\n")
    runner = CliRunner()
    res = runner.invoke(app, ["publish", str(f), "--bootstrap", broker.bootstrap, "--topic", topic, "--quiet"])
    assert res.exit_code == 1, res.output  # one invalid line: reported, skipped, exit 1
    assert ":11: skipped" in res.output and "published 50" in res.output

    res = runner.invoke(app, ["tail", "--bootstrap", broker.bootstrap, "--topic", topic, "--from-beginning",
                              "--json", "--max", "50", "--timeout", "10"])
    assert res.exit_code == 0, res.output
    got = [orjson.loads(x) for x in res.output.splitlines() if x.startswith("{")]
    assert sorted(d["product_id"] for d in got) == sorted(f"p{i}" for i in range(50))

    # keyed by product_id: one product always lands on one partition
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"{topic_prefix}chk"})
    c.assign([TopicPartition(topic, p, 0) for p in range(3)])
    keys = {}
    for m in c.consume(200, timeout=3):
        if m.error() is None:
            keys[m.key().decode()] = m.partition()
    c.close()
    assert len(keys) == 50


@pytest.mark.integration
def test_publish_rate_and_tail_new_only(broker, topic_prefix):
    import threading
    import time

    from llmens_core.events import AttributeDecision

    topic = f"{topic_prefix}attrs"
    _create(broker.bootstrap, topic, 2)
    old = AttributeDecision(product_id="old", version=1, attribute="color_family", value="red", confidence=0.9,
                            posterior={"red": 0.9}, votes={"a": "red"}, model_version=1)
    publish_products(broker.bootstrap, topic, [orjson.loads(old.to_bytes())] * 30, progress=False)

    new = [orjson.loads(AttributeDecision(
        product_id=f"n{i}", version=1, attribute="gender", value="female", confidence=0.55,
        posterior={"female": 0.55, "male": 0.45}, votes={"sim-a": "female", "sim-b": "male"}, model_version=4,
    ).to_bytes()) for i in range(5)]
    t = threading.Timer(1.5, lambda: publish_products(broker.bootstrap, topic, new, rate=50, progress=False))
    t.start()
    start = time.monotonic()
    res = CliRunner().invoke(app, ["tail", "--bootstrap", broker.bootstrap, "--topic", topic, "--max", "5",
                                   "--timeout", "15"])
    t.join()
    assert res.exit_code == 0, res.output
    out = res.output
    assert "old" not in out.replace("tailing", "")  # started at the true end, not at Tansu's ListOffsets end
    assert out.count("gender = female") == 5 and "0.55" in out
    # --rate 50 for 5 records takes >= 80 ms after the 1.5 s delay
    assert time.monotonic() - start >= 1.5


def _decision(i: int):
    from llmens_core.events import AttributeDecision

    votes = {f"simulated-llm-with-a-long-name-{k}": "female" for k in range(4)}
    return orjson.loads(AttributeDecision(
        product_id=f"product-{i}", version=1, attribute="gender", value="female", confidence=0.91,
        posterior={"female": 0.91, "male": 0.09}, votes=votes, model_version=2).to_bytes())


@pytest.mark.integration
def test_tail_piped_prints_one_record_a_line_whatever_its_length(broker, topic_prefix):
    """Piped to a file or grep (not a terminal), a decision longer than 80 columns stays on one line."""
    topic = f"{topic_prefix}attrs"
    _create(broker.bootstrap, topic, 1)
    publish_products(broker.bootstrap, topic, [_decision(i) for i in range(6)], progress=False)
    res = CliRunner().invoke(app, ["tail", "--bootstrap", broker.bootstrap, "--topic", topic, "--from-beginning",
                                   "--max", "6", "--timeout", "15"])
    assert res.exit_code == 0, res.output
    records = [line for line in res.output.splitlines() if not line.startswith("tailing")]
    assert len(records) == 6 and all(len(line) > 80 for line in records), res.output
    assert all(line.startswith(f"product-{i} v1 gender = female 0.91") and
               line.endswith("simulated-llm-with-a-long-name-3=female") for i, line in enumerate(records))


FEEDBACK = [{"product_id": "p1", "attribute": "gender", "label": "female", "source": "reviewer-7"},
            {"product_id": "p2", "version": 3, "attribute": "color_family", "label": "none"}]


@pytest.mark.parametrize("how", ["feedback", "publish-to-feedback-topic"])
@pytest.mark.integration
def test_gold_labels_are_sent_from_the_cli_and_validated_as_feedback(broker, topic_prefix, tmp_path, how):
    """Before: `publish -t attribute-feedback` demanded a product title of every label."""
    from streams.settings import Settings

    st = Settings(kafka={"bootstrap": broker.bootstrap, "topic_prefix": topic_prefix})
    topic = st.topic("attribute_feedback")
    _create(broker.bootstrap, topic, 2)
    config = tmp_path / "settings.yaml"
    config.write_text(f"kafka:\n  bootstrap: {broker.bootstrap}\n  topic_prefix: {topic_prefix}\n")
    f = tmp_path / "gold.jsonl"
    f.write_text("\n".join([orjson.dumps(FEEDBACK[0]).decode(), '{"product_id": "p9", "attribute": "gender"}',
                            orjson.dumps(FEEDBACK[1]).decode()]) + "\n")
    args = (["feedback", str(f)] if how == "feedback"
            else ["publish", str(f), "--topic", "attribute-feedback"])
    res = CliRunner().invoke(app, [*args, "--config", str(config), "--quiet"])
    assert res.exit_code == 1, res.output  # the label-less line: reported with its number, the others sent
    assert ":2: skipped" in res.output and "label" in res.output and "title" not in res.output
    assert f"published 2 feedback record(s) to {topic}" in res.output
    res = CliRunner().invoke(app, ["tail", "--config", str(config), "--topic", "attribute-feedback",
                                   "--from-beginning", "--json", "--max", "2", "--timeout", "10"])
    got = sorted((orjson.loads(x) for x in res.output.splitlines()), key=lambda d: d["product_id"])
    assert [{k: d[k] for k in ("product_id", "attribute", "label", "version")} for d in got] == [
        {"product_id": "p1", "attribute": "gender", "label": "female", "version": None},
        {"product_id": "p2", "attribute": "color_family", "label": "none", "version": 3}]
    assert got[0]["source"] == "reviewer-7"
