"""index_load: what the router adds to a shared PostgreSQL index, the resource a cluster shares.

Several Orthancs behind a load balancer share one PostgreSQL index (and one storage). Each
node classifies what it receives, so CPU scales with the nodes; the index does not. This
measures, on one node with the PostgreSQL index plugin, the index transactions per stored
instance with and without the router (with it, every instance is classified and forwarded to
a peer: a routed X-ray) (``pg_stat_database.xact_commit``), and the node's ingest
rate on that index. Dividing the index's transaction capacity by the transactions per instance
gives the cluster's ceiling; the classification rate per node gives how many nodes reach it.

The throw-away cluster runs with ``fsync=off`` (tests/support/postgres.py): transaction
*counts* are exact, but a production index with durable commits sustains fewer per second.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bodypart_router.inference.classes import CLASS_NAMES
from support.orthanc import peer_config
from support.postgres import POSTGRESQL_INDEX_PLUGIN, PostgresCluster, unavailable

from . import corpus
from .index_breakdown import LOG_LINE_PREFIX, breakdown
from .servers import DEFAULT_SENDERS, PEER, make_payload, orthanc_config, running, store_all, wait_until_drained

VARIANTS = ("with_router", "without_router")
#: Instances of the run that says what each transaction does.
BREAKDOWN_INSTANCES = 100
#: Time for a closed connection's statistics to reach pg_stat_database.
STATS_FLUSH_SECONDS = 1.0


def _activity(pg: PostgresCluster) -> tuple[int, int]:
    """(transactions committed, rows written) in the Orthanc database so far.

    Read-only statements count as transactions too: both are load on the shared index.
    """
    out = pg.psql("SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database "
                  f"WHERE datname = '{pg.database}'")
    commits, rows = out.split("|")
    return int(commits), int(rows)


def _node_config(model: Path | None, peer, pg: PostgresCluster) -> dict:
    """The node's configuration on ``pg``'s index: with the router (``model`` given) every class
    goes to the peer, so that what is counted is a routed X-ray; without it, plain Orthanc."""
    config = (orthanc_config(model, peers={PEER: peer}, routes={c: [PEER] for c in CLASS_NAMES},
                             router={"UncertainRoutes": [PEER]}) if model else orthanc_config(None))
    config["Plugins"].append(POSTGRESQL_INDEX_PLUGIN)
    config.update(pg.orthanc_config())
    return config


def _by_purpose(model: Path, work: Path, items: list[bytes]) -> dict[str, float]:
    """One more run with the router, PostgreSQL logging every statement: transactions per
    instance by what they do (:mod:`bench.index_breakdown`). Apart from the counts, so that the
    logging does not slow the measured runs."""
    with PostgresCluster() as pg, running(peer_config(PEER), "scale-breakdown-peer",
                                          work / "orthanc" / "scale-breakdown-peer", router=False) as peer:
        config = _node_config(model, peer, pg)
        workdir = work / "orthanc" / "scale-breakdown"
        with running(config, "scale-breakdown", workdir, router=True):
            pass  # Orthanc's schema, not counted
        pg.log_every_statement(LOG_LINE_PREFIX)
        time.sleep(STATS_FLUSH_SECONDS)
        start = len(pg.log_text())
        with running(config, "scale-breakdown", workdir, router=True) as node:
            store_all(node, items, "rest", DEFAULT_SENDERS)
            wait_until_drained(node, len(items), forwarded=True)
        time.sleep(STATS_FLUSH_SECONDS)
        names = {int(v): k for k, v in config.get("UserMetadata", {}).items()}
        return breakdown(pg.log_text()[start:], len(items), names)


def measure(data: corpus.Corpus, model: Path, work: Path, *, instances: int = 300, rounds: int = 2,
            senders: int = DEFAULT_SENDERS) -> dict:
    """Index transactions per instance and ingest/s on a PostgreSQL index, router on and off."""
    reason = unavailable()
    if reason:
        return {"skipped": reason}
    payload = make_payload(f"small-{instances}", data.ingest["small"], instances, work / "payloads")
    items = [f.read_bytes() for f in payload.files]
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    commits: dict[str, list[float]] = {v: [] for v in VARIANTS}
    rows: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        for variant in VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS)):
            with_router = variant == "with_router"
            with PostgresCluster() as pg, running(peer_config(PEER), f"scale-{variant}-peer",
                                                  work / "orthanc" / f"scale-{variant}-peer", router=False) as peer:
                config = _node_config(model if with_router else None, peer, pg)
                workdir = work / "orthanc" / f"scale-{variant}"
                # A first start creates Orthanc's schema, so that it is not counted below.
                with running(config, f"scale-{variant}", workdir, router=with_router):
                    pass
                time.sleep(STATS_FLUSH_SECONDS)
                commits_before, rows_before = _activity(pg)
                with running(config, f"scale-{variant}", workdir, router=with_router) as node:
                    seconds = store_all(node, items, "rest", senders)
                    if with_router:
                        wait_until_drained(node, instances, forwarded=True)
                # PostgreSQL publishes a connection's statistics when it closes: read them after
                # Orthanc has stopped, so every transaction of the run (router's included) counts.
                time.sleep(STATS_FLUSH_SECONDS)
                commits_after, rows_after = _activity(pg)
                commits[variant].append((commits_after - commits_before) / instances)
                rows[variant].append((rows_after - rows_before) / instances)
            rates[variant].append(instances / seconds)
    return {
        "instances": instances,
        "transactions_by_purpose": _by_purpose(model, work, items[:BREAKDOWN_INSTANCES]),
        "index": "PostgreSQL 15 (fsync off), orthanc-postgresql index plugin",
        "index_transactions_per_instance": {v: round(statistics.median(commits[v]), 1) for v in VARIANTS},
        "index_rows_written_per_instance": {v: round(statistics.median(rows[v]), 1) for v in VARIANTS},
        "ingest_per_s": {v: round(statistics.median(rates[v]), 1) for v in VARIANTS},
        "rounds": {v: [round(x, 1) for x in rates[v]] for v in VARIANTS},
    }
