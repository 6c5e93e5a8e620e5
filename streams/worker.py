"""What one worker process holds besides faust's tables: settings, schema, DS models, students, gateway, counters."""

from __future__ import annotations

import collections
import contextlib
from collections import defaultdict
from collections.abc import Iterator

from llmens_core.decisions import RevisionWindow, StatsAccumulator
from llmens_core.llm.cache import ResponseCache
from llmens_core.llm.gateway import Gateway
from llmens_core.schema import AttributeSchema
from streams.metrics import WorkerMetrics
from streams.models import ModelRegistry
from streams.settings import Settings
from streams.students import StudentRegistry

__all__ = ["Worker"]


class Worker:
    """The state one worker process holds: the decider, learner, feedback agent and views share it."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.schema = AttributeSchema.load(settings.attributes_file)
        self.metrics = WorkerMetrics()
        self.registry = ModelRegistry(self.schema, settings.llms, **settings.aggregation.model_kwargs())
        self.registry.on_update = self.metrics.update_model_metrics
        self.students: StudentRegistry | None = None
        """Each attribute's student, when it is asked first (``settings.student.active``; issue 33)."""
        if settings.student.active(settings.adaptive):
            self.students = StudentRegistry(self.schema, settings)
            self.students.on_update = self.metrics.update_student_metrics
        self.teach: dict[str, list[tuple[str, str, float]]] = {}
        """(text, label, weight) per attribute decided since the last flush, for the attribute's student."""
        self.gateway: Gateway | None = None
        self.stats = StatsAccumulator(settings.aggregation.stats_flush_items)
        self.revisions = RevisionWindow(settings.aggregation.revision_window)
        self.counters: dict[str, float] = defaultdict(float)
        self.inflight: collections.Counter = collections.Counter()
        """Products in flight per stage (diagnostics for a stalled worker, served by /counters)."""

    async def start_gateway(self) -> Gateway:
        """The LLM gateway, started on first use (inside the worker's event loop)."""
        if self.gateway is None:
            st = self.settings.state
            cache = ResponseCache(self.settings.data_dir / "response-cache", write_buffer_mib=st.write_buffer_mib,
                                  max_write_buffers=st.max_write_buffers, block_cache_mib=st.block_cache_mib)
            self.gateway = Gateway(self.settings.llms, self.schema, cache=cache,
                                   product_deadline_s=self.settings.product_deadline_s)
            await self.gateway.start()
            self.metrics.attach_gateway(self.gateway)
        return self.gateway

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Count a product as in stage ``name`` while the block runs."""
        self.inflight[name] += 1
        try:
            yield
        finally:
            self.inflight[name] -= 1

    async def close(self) -> None:
        if self.gateway is not None:
            await self.gateway.close()
            if self.gateway.cache is not None:
                self.gateway.cache.close()
            self.gateway = None
        self.metrics.close()
