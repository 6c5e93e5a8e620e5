"""The student asked first (issue 33): its vote costs nothing, and the LLMs are asked only when it does not settle.

The student is one more member of the panel (worker :data:`~llmens_core.student.STUDENT`): the DS model learns
its confusion from the products where LLMs answered beside it, and :meth:`.policy.AdaptivePolicy.unsettled`
reads its vote as any other. :func:`ask_student_first` puts the student's votes in first; an attribute they
settle (asking every LLM would gain at most ``max_gain`` under the live model) is decided by the student alone,
the others are asked in stages as :func:`.policy.ask_in_stages` asks them. Warm-up and exploration products, and
the students' own exploration share, ask the LLMs whatever the student says (the student still votes), so every
member keeps being measured on products the student did not pick.

What is learnt from a decision (:func:`learnable`, :func:`teaching`): the DS model learns an attribute's votes
only when an LLM answered it (a student alone says nothing about anyone's reliability and would confirm
itself), and the student learns the panel's decision without its own vote, weighted by that decision's
confidence (the student learns the LLMs, not its own echo).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from llmens_core.adaptive.policy import AdaptivePolicy
from llmens_core.aggregation import OnlineDawidSkene
from llmens_core.student.panel import STUDENT

__all__ = ["ask_student_first", "decided_alone", "learnable", "teaching"]


def _fold(by_attr: dict[str, dict], votes: list[Any]) -> None:
    for v in votes:
        by_attr.setdefault(v.attribute, {})[v.llm] = v.label


async def ask_student_first(
    policy: AdaptivePolicy,
    label: Callable[[list[str], list[str]], Awaitable[list[Any]]],
    product_id: str,
    attributes: Sequence[str],
    models: Mapping[str, OnlineDawidSkene],
    student_votes: Mapping[str, Mapping[str, str]],
    *,
    may_decide_alone: bool = True,
) -> tuple[list[Any], dict[str, dict], list[str], str]:
    """Ask one product: the student's votes first, then LLMs in stages for the attributes they leave unsettled.

    ``student_votes`` is ``{attribute: {"student": label}}`` for the attributes where the student votes
    (:meth:`~llmens_core.student.Students.votes`); ``may_decide_alone=False`` (the students' exploration share)
    asks the LLMs on every attribute. Returns (the LLMs' votes, ``{attribute: {member: label}}`` with the
    student's votes in, the LLMs asked, the stop reason): ``"student"`` when no LLM was asked, else the reason
    :func:`.policy.ask_in_stages` gives.
    """
    by_attr: dict[str, dict] = {a: dict(student_votes.get(a, {})) for a in attributes}
    if policy.warming_up(models, attributes) or policy.explore(product_id):
        warm = policy.warming_up(models, attributes)
        if warm:
            policy.asked_everyone(attributes)
        votes = list(await label(list(attributes), list(policy.order)))
        _fold(by_attr, votes)
        return votes, by_attr, list(policy.order), "warmup" if warm else "explore"
    todo = list(attributes)
    if may_decide_alone and any(by_attr.values()):
        todo = policy.unsettled(models, by_attr, todo)
        if not todo:
            return [], by_attr, [], "student"
    votes: list[Any] = []
    asked: list[str] = []
    for stage in policy.plan(product_id, models, attributes):
        new = list(await label(todo, stage))
        votes += new
        _fold(by_attr, new)
        asked += stage
        todo = policy.unsettled(models, by_attr, todo, asked=asked)
        if not todo:
            break
    return votes, by_attr, asked, policy.reason(product_id, unsettled=todo)


def decided_alone(votes: Mapping[str, str | None]) -> bool:
    """True when the student's vote is the only usable one of an attribute's votes."""
    usable = [w for w, lab in votes.items() if lab is not None]
    return usable == [STUDENT]


def learnable(by_attr: Mapping[str, Mapping[str, str | None]]) -> dict[str, dict[str, str | None]]:
    """The attributes' votes the DS model may learn: those where some LLM answered (student's vote kept)."""
    return {a: dict(v) for a, v in by_attr.items()
            if any(lab is not None for w, lab in v.items() if w != STUDENT)}


def teaching(model: OnlineDawidSkene, votes: Mapping[str, str | None]) -> tuple[str, float] | None:
    """What the student learns from one decided attribute: the panel's label without the student's vote and its
    posterior probability (the weight), or ``None`` when no LLM answered or the model has no classes."""
    panel = {w: lab for w, lab in votes.items() if w != STUDENT}
    if not model.classes_ or not any(lab is not None for lab in panel.values()):
        return None
    post = model.posterior(panel)
    k = int(post.argmax())
    return str(model.classes_[k]), float(post[k])
