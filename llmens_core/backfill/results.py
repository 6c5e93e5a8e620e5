"""One batch result line -> the votes the synchronous gateway would have given for the same response.

The response body is read by the gateway's own provider (:meth:`Provider.extract_for`) and the answer by its own
parser (:func:`parse_answer_shared`): a refusal, a safety block or a cut-off abstains on every attribute (``raw``
``declined:<why>``, billed); an answer with no JSON in it is a bad line, billed and asked again, as the gateway
retries a malformed answer. A line that errored or is missing is asked again, unbilled. Usage is the response's
own (estimated from text length when absent, as the gateway does) at the endpoint's batch price.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmens_core.backfill.apis import LineResult
from llmens_core.backfill.requests import BatchRequest
from llmens_core.events import LabelVote
from llmens_core.llm.config import EndpointConfig
from llmens_core.llm.parsing import parse_answer_shared
from llmens_core.llm.providers import PROVIDERS, ProviderResponseError, estimate_tokens

__all__ = ["LineOutcome", "read_line"]


@dataclass
class LineOutcome:
    """Votes (``None`` when the line must be asked again, ``failure`` says why) and what the line cost."""

    votes: list[LabelVote] | None
    failure: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    declined: str | None = None
    counts: dict[str, int] = field(default_factory=dict)


def read_line(ep: EndpointConfig, req: BatchRequest, line: LineResult | None) -> LineOutcome:
    """The outcome of ``req`` from its result ``line`` (``None``: the results had no line for it)."""
    if line is None:
        return LineOutcome(None, "missing: no result line for this custom id")
    if line.error is not None:
        return LineOutcome(None, f"errored: {line.error}"[:300])
    try:
        text, tin, tout, confidence, declined = PROVIDERS[ep.provider].extract_for(ep, req.prompt, b"", line.data)
    except (ProviderResponseError, AttributeError, TypeError, KeyError):
        return LineOutcome(None, "bad_response: not a response of this provider")
    tin = tin if tin is not None else estimate_tokens(req.prompt.chars)
    tout = tout if tout is not None else estimate_tokens(len(text))
    cost = ep.batch_cost(tin, tout)
    p = req.product
    share = cost / len(req.attributes)
    if declined is not None:
        votes = [LabelVote(product_id=p.product_id, version=p.version, attribute=a.name, llm=ep.name, label=None,
                           raw=f"declined:{declined}", cost_usd=share) for a in req.attributes]
        return LineOutcome(votes, None, tin, tout, cost, declined, {"abstentions": len(votes)})
    parsed = parse_answer_shared(text, req.attributes, missing_is_none=ep.prompt == "ecinstruct")
    if not parsed.found_json:
        return LineOutcome(None, "malformed: no JSON answer in the response", tin, tout, cost)
    conf = confidence or {}
    votes = [LabelVote(product_id=p.product_id, version=p.version, attribute=a.name, llm=ep.name,
                       label=parsed.labels[a.name], raw=parsed.raw[a.name], cost_usd=share,
                       confidence=conf.get(a.name)) for a in req.attributes]
    return LineOutcome(votes, None, tin, tout, cost, None,
                       {"abstentions": parsed.abstentions, "missing": parsed.missing})
