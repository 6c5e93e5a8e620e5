"""The worker's web pages: /metrics (Prometheus), /healthz, /model, /student, /counters, /debug/tasks, /debug/memory."""

from __future__ import annotations

import asyncio
import collections
import time

import faust

from streams.memory import memory_report
from streams.worker import Worker

__all__ = ["install_views", "task_locations"]


def task_locations(limit: int = 40) -> dict[str, int]:
    """Where every asyncio task is waiting (``file:line function`` -> count), for diagnosing a stall."""
    where: collections.Counter = collections.Counter()
    for task in asyncio.all_tasks():
        coro, frame = task.get_coro(), None
        while coro is not None:
            frame = (getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
                     or getattr(coro, "ag_frame", None) or frame)
            coro = (getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
                    or getattr(coro, "ag_await", None))
        if frame is not None:
            code = frame.f_code
            where[f"{'/'.join(code.co_filename.rsplit('/', 2)[-2:])}:{frame.f_lineno} {code.co_name}"] += 1
    return dict(where.most_common(limit))


def _consumer_view(consumer) -> dict:
    fetch = {f"{tp.topic}:{tp.partition}": {**state, "committed": consumer.committed_offset(tp),
                                            "read_offset": consumer.delivered_offset(tp)}
             for tp, state in consumer.fetch_states().items()}
    guard = {"stale_fetches_dropped": getattr(consumer, "stale_fetches_dropped", 0),
             "gaps_seen": getattr(consumer, "gaps_seen", 0)}
    return {"partitions": consumer.partition_sets(), "fetch": fetch, "guard": guard}


def install_views(app: faust.App, w: Worker) -> None:
    """Register the worker's pages on ``app``."""

    @app.page("/metrics")
    async def metrics_view(web, request):
        body, content_type = w.metrics.render()
        return web.bytes(body, content_type=content_type.split(";")[0])

    @app.page("/healthz")
    async def healthz(web, request):
        return web.json({"ok": True, "models_ready": w.registry.ready.is_set(), "counters": dict(w.counters),
                         "generation": app.consumer_generation_id, "time": time.time()})

    @app.page("/debug/memory")
    async def memory_view(web, request):
        return web.json(memory_report(app, w))

    @app.page("/debug/tasks")
    async def tasks_view(web, request):
        return web.json(task_locations())

    @app.page("/model")
    async def model_view(web, request):
        return web.json(w.registry.summaries())

    @app.page("/student")
    async def student_view(web, request):
        """Each attribute's student (issue 33): its summary (version, products learnt, prequential agreement with
        the panel and licensed threshold per text bucket) and this worker's decisions by the student's role."""
        return web.json({"enabled": w.students is not None, "roles": w.metrics.student_roles(),
                         "students": w.students.summaries() if w.students is not None else {}})

    @app.page("/counters")
    async def counters_view(web, request):
        gw = w.gateway
        llm = {n: c.as_dict() if hasattr(c, "as_dict") else vars(c) for n, c in (gw.counters() if gw else {}).items()}
        return web.json({"worker": dict(w.counters), "llm": llm, "inflight": dict(w.inflight),
                         **_consumer_view(app.consumer)})
