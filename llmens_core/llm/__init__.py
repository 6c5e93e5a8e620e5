"""The LLM side of llmens: endpoints, providers, prompts, parsing, cache, the gateway and a simulator.

``Gateway`` is what the streaming layer calls; ``start_simulator`` serves simulated LLMs for tests/demos.
"""

from llmens_core.llm.cache import ResponseCache
from llmens_core.llm.client import EndpointCounters
from llmens_core.llm.config import EndpointConfig, load_endpoints
from llmens_core.llm.gateway import Gateway

__all__ = ["EndpointConfig", "EndpointCounters", "Gateway", "ResponseCache", "load_endpoints"]
