"""llmens core library: event contracts, attribute schemas, aggregation mathematics and the LLM gateway.

Nothing here imports Kafka or faust, so it can be used from a notebook or another stream processor.
"""

__version__ = "0.1.0"
