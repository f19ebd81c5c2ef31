"""Backfill: classify (and optionally route) what Orthanc already stored before the router.

A site adopting the router has an archive. ``POST /bodypart-router/backfill`` takes one of

* ``{}`` - every instance;
* ``{"Since": "2024-01-01"}`` - instances of studies whose Study Date (0008,0020) is that
  day or later;
* ``{"Studies": ["<orthanc study id or StudyInstanceUID>", ...]}``;

plus ``"Route": true`` to forward as well as label (default: label only) and
``"RatePerSecond"`` (default :data:`DEFAULT_RATE`).

Why Study Date and ``/tools/find`` rather than Orthanc's changes log: a user asking for
"since January" means the clinical date of the images, and Study Date is a main DICOM tag
that Orthanc indexes in its database, so the query reads no files and behaves the same on
Orthanc 1.10 and 1.12. The changes log records when Orthanc *received* an instance, which
for a migrated or re-imported archive says nothing about the images, and Orthanc prunes it
when resources are deleted. Studies without a Study Date are only reached by "everything".

The run is planned first (instance IDs written to a checkpoint, page by page), then worked
through in order. The checkpoint is a SQLite file in the router's state directory
(:data:`CHECKPOINT_NAME`): each instance is marked done as soon as it is processed, so
after a restart the adapter calls :meth:`BackfillRunner.resume` and the run continues
where it stopped (an instance caught mid-way is processed again, which the router's
idempotence makes harmless).

Live ingest keeps priority: the runner only takes the next instance when the live queue
is empty, and never faster than a token bucket allows. Everything Orthanc-specific goes
through the injected :class:`~bodypart_router.orthanc_api.Orthanc` and ``process`` callable,
so the package is tested without Orthanc.

Modules: :mod:`.scope` (the request, the plan), :mod:`.checkpoint` (SQLite), :mod:`.runner`
(the thread, throttling, progress).
"""

from __future__ import annotations

from .checkpoint import CHECKPOINT_NAME, DELETED, KNOWN, Checkpoint, outcome_kind
from .runner import (ACTIVE_STATES, CANCELLED, DONE, FAILED, PLANNING, RUNNING, YIELD_POLL_SECONDS, BackfillBusy,
                     BackfillRunner, Process, RateMeter, TokenBucket)
from .scope import DEFAULT_RATE, PAGE_SIZE, BackfillError, Scope, plan

__all__ = [
    "ACTIVE_STATES",
    "BackfillBusy",
    "BackfillError",
    "BackfillRunner",
    "CANCELLED",
    "CHECKPOINT_NAME",
    "Checkpoint",
    "DEFAULT_RATE",
    "DELETED",
    "DONE",
    "FAILED",
    "KNOWN",
    "PAGE_SIZE",
    "PLANNING",
    "Process",
    "RUNNING",
    "RateMeter",
    "Scope",
    "TokenBucket",
    "YIELD_POLL_SECONDS",
    "outcome_kind",
    "plan",
]
