"""Prometheus metrics of one server: HTTP-side series, every key of ``engine.stats()``, and the
server's own flat stats (program recognition) as ``continuum_<key>``.

Engine stats are exported generically so counters other engineers add (pins, TTLs, swaps,
queueing delay...) appear without code here: key ``k`` becomes ``continuum_engine_k``; keys
ending in ``_total`` are counters, the rest gauges. The snapshot is taken on the engine thread
(``AsyncLLMEngine.call``) at scrape time, never racing a step. Each server has its own
registry, so several apps can live in one process (tests).
"""
from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)
_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_]")


class _StatsCollector:
    """Turns the latest snapshot of flat stats into metric families named ``prefix + key``."""

    def __init__(self, prefix: str, what: str) -> None:
        self.prefix, self.what = prefix, what
        self.snapshot: dict[str, float] = {}

    def collect(self):
        for key, value in sorted(self.snapshot.items()):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            name = self.prefix + _BAD_CHARS.sub("_", key)
            if name.endswith("_total"):
                yield CounterMetricFamily(name[:-len("_total")], f"{self.what} {key}", value=value)
            else:
                yield GaugeMetricFamily(name, f"{self.what} {key}", value=value)


class ServerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.http_requests = Counter("continuum_http_requests", "HTTP requests by route and status",
                                     ["route", "status"], registry=r)
        self.e2e = Histogram("continuum_request_latency_seconds", "end-to-end latency of a generation",
                             ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("continuum_time_to_first_token_seconds", "time to first token",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("continuum_inter_token_latency_seconds",
                             "time between consecutive outputs of a request", buckets=_ITL_BUCKETS,
                             registry=r)
        self.prompt_tokens = Counter("continuum_prompt_tokens", "prompt tokens of finished requests",
                                     registry=r)
        self.generation_tokens = Counter("continuum_generation_tokens", "generated tokens", registry=r)
        self.cached_tokens = Counter("continuum_cached_prompt_tokens",
                                     "prompt tokens served from the prefix cache", registry=r)
        self.finished = Counter("continuum_requests_finished", "finished generations by reason",
                                ["reason"], registry=r)
        self.rejected = Counter("continuum_requests_rejected", "requests refused with 503",
                                ["reason"], registry=r)
        self.aborted = Counter("continuum_requests_aborted", "requests aborted (client gone)",
                               registry=r)
        self.in_flight = Gauge("continuum_requests_in_flight", "requests streaming or queued",
                               registry=r)
        self._engine = _StatsCollector("continuum_engine_", "engine stat")
        r.register(self._engine)
        # the server's own flat stats (program recognition: ``continuum_turns_attached_total``...)
        self._front = _StatsCollector("continuum_", "server stat")
        r.register(self._front)

    def render(self, engine_stats: dict[str, float], front_stats: dict[str, float] | None = None) -> bytes:
        self._engine.snapshot = dict(engine_stats)
        self._front.snapshot = dict(front_stats or {})
        return generate_latest(self.registry)
