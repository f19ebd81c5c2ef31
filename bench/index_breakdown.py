"""What each PostgreSQL index transaction of a routed X-ray does, read from the statement log.

``index_load`` counts transactions (``pg_stat_database.xact_commit``); this says where they go.
PostgreSQL logs every statement with its backend and virtual transaction ID
(``log_statement = all``, ``log_line_prefix = '%m %p %v '``); statements between ``BEGIN`` and
``COMMIT`` of one backend are one transaction, and what they touch names its purpose: Orthanc's
own store and stable-resource events, metadata writes (by name), attachment lookups (the
router's read of where the file is, and the forward job's read of the file), resource lookups,
and reads of the changes log.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Mapping

#: Prefix that makes each statement line name its backend and virtual transaction.
LOG_LINE_PREFIX = "%m %p %v "
_STATEMENT = re.compile(r"^\S+ \S+ \S+ (\d+) \S+ LOG:  (?:statement|execute [^:]+): (.*)$")
_PARAMETERS = re.compile(r"^\S+ \S+ \S+ (\d+) \S+ DETAIL:  parameters: (.*)$")
_METADATA_TYPE = re.compile(r"\$2 = '(\d+)'")


def _purpose(statements: list[str], metadata_type: str | None, names: Mapping[int, str]) -> str:
    text = " | ".join(statements)
    if "CreateInstance" in text:
        return "store the instance (Orthanc)"
    if "INSERT INTO Metadata" in text:
        name = names.get(int(metadata_type), f"type {metadata_type}") if metadata_type else "?"
        return f"metadata write: {name}"
    if "FROM AttachedFiles" in text or "uncompressedSize" in text:
        return "attachment lookup (where the file is / the forward job reads it)"
    if "FROM Changes" in text:
        return "changes log read"
    if "INSERT INTO Changes" in text:
        return "change event (Orthanc: stable series, study...)"
    if all(s.startswith("SELECT internalId, resourceType FROM Resources") for s in statements) and statements:
        return "resource lookup (forward job submission)"
    return "other (start-up, shutdown, properties)"


def breakdown(log_text: str, instances: int, metadata_names: Mapping[int, str] | None = None) -> dict[str, float]:
    """Transactions per instance by purpose, most frequent first, plus ``"total"``."""
    names = dict(metadata_names or {})
    open_tx: dict[str, list[str]] = {}
    metadata_type: dict[str, str | None] = {}
    last_was_metadata: dict[str, bool] = {}
    counts: Counter[str] = Counter()
    for line in log_text.splitlines():
        params = _PARAMETERS.match(line)
        if params:
            pid = params.group(1)
            if last_was_metadata.get(pid) and (found := _METADATA_TYPE.search(params.group(2))):
                metadata_type[pid] = found.group(1)
            continue
        match = _STATEMENT.match(line)
        if not match:
            continue
        pid, sql = match.group(1), re.sub(r"\s+", " ", match.group(2)).strip()
        last_was_metadata[pid] = sql.startswith("INSERT INTO Metadata")
        if sql == "BEGIN":
            open_tx[pid], metadata_type[pid] = [], None
        elif sql in ("COMMIT", "ROLLBACK"):
            if pid in open_tx:
                counts[_purpose(open_tx.pop(pid), metadata_type.pop(pid, None), names)] += 1
        elif sql.startswith(("SET TRANSACTION", "DEALLOCATE")):
            continue
        elif pid in open_tx:
            open_tx[pid].append(sql)
        else:  # a statement outside BEGIN/COMMIT is a transaction of its own
            counts[_purpose([sql], None, names)] += 1
    out = {purpose: round(n / instances, 2) for purpose, n in counts.most_common()}
    out["total"] = round(sum(counts.values()) / instances, 2)
    return out
