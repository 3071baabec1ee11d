"""Prometheus metrics at ``/metrics``, with the maintained ``prometheus-client``.

One registry per hub (tests run several hubs in one process). Gauges and counters that the hub
already keeps (rooms, peers, journal depth, relayed entries) are read when Prometheus scrapes,
by a collector, so the update path pays nothing for them; only the commit latency and batch
size and the cross-process relay lag are observed as they happen (a histogram observation, about
a microsecond). Extensions add their own collectors to ``HubMetrics.registry`` (the agents
extension: runs by status). The route is in ``app.py``: in tokens mode it needs a token, like
every other route (Prometheus: ``authorization: {credentials: <token>}`` in the scrape config).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .hub import Hub

__all__ = ["HubMetrics", "CONTENT_TYPE_LATEST"]


class HubMetrics:
    """What one hub process reports."""

    def __init__(self, hub: "Hub") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.commit_seconds = Histogram(
            "tinymorph_commit_seconds", "Time to commit one batch of log entries to the database",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=self.registry)
        self.commit_batch = Histogram(
            "tinymorph_commit_batch_size", "Log entries per commit (group commit)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048), registry=self.registry)
        self.relay_lag = Histogram(
            "tinymorph_cluster_relay_lag_seconds",
            "From another process's commit to this process reading the entry from Redis",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5), registry=self.registry)
        self.registry.register(_HubCollector(hub))

    def committed(self, entries: int, seconds: float) -> None:
        self.commit_seconds.observe(seconds)
        self.commit_batch.observe(entries)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _HubCollector(Collector):
    def __init__(self, hub: "Hub") -> None:
        self.hub = hub

    def describe(self) -> list[Metric]:
        return []  # read at scrape time: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        rooms = hub.rooms.all() if hub.rooms else []
        yield GaugeMetricFamily("tinymorph_rooms", "Open rooms (documents loaded)", value=len(rooms))
        yield GaugeMetricFamily("tinymorph_peers", "Open websockets in rooms", value=len(hub.peers))
        yield GaugeMetricFamily("tinymorph_quarantined_entries", "Log entries skipped as unloadable",
                                value=len(hub.store.quarantined))
        journal = hub.journal
        yield GaugeMetricFamily("tinymorph_journal_depth", "Updates waiting to be committed",
                                value=journal.depth if journal else 0)
        yield CounterMetricFamily("tinymorph_updates_committed", "Updates committed by this process",
                                  value=journal.committed if journal else 0)
        yield CounterMetricFamily("tinymorph_commits", "Commits (batches) by this process",
                                  value=journal.batches if journal else 0)
        cluster = hub.cluster
        if cluster is None:
            return
        yield GaugeMetricFamily("tinymorph_cluster_redis_up", "1 while Redis answers", value=int(cluster.connected))
        yield CounterMetricFamily("tinymorph_cluster_relayed_in", "Entries read from other processes",
                                  value=cluster.relayed_in)
        yield CounterMetricFamily("tinymorph_cluster_relayed_out", "Entries appended to Redis for the others",
                                  value=cluster.relayed_out)
        yield CounterMetricFamily("tinymorph_cluster_gaps_backfilled", "Entries read from the database to fill "
                                  "holes in the sequence (missed on Redis)", value=cluster.gaps_filled)
        yield GaugeMetricFamily("tinymorph_cluster_stream_lag_entries", "Entries received but waiting for an "
                                "earlier one (out of order or missing)", value=cluster.waiting())
        yield GaugeMetricFamily("tinymorph_cluster_outbox", "Messages waiting to be appended to Redis",
                                value=cluster.outbox_depth)
        yield GaugeMetricFamily("tinymorph_cluster_remote_presence", "Presence states of other processes' clients",
                                value=sum(len(r.remote_clients) for r in rooms))

