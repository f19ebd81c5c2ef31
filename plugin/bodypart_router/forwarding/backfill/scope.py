"""What a backfill covers (:class:`Scope`, from the request) and which instances that is (:func:`plan`)."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from ...errors import BodyPartRouterError
from ...orthanc_api import Orthanc

#: Instances per second when the request does not say.
DEFAULT_RATE = 20.0
#: Page size for listing instances and studies through the REST API.
PAGE_SIZE = 500


class BackfillError(BodyPartRouterError, ValueError):
    """A request that cannot start a backfill; the message names the field and what to fix."""


@dataclass(frozen=True)
class Scope:
    """What a backfill covers. ``since`` and ``studies`` are mutually exclusive; neither = all."""

    since: _dt.date | None = None
    studies: tuple[str, ...] = ()
    route: bool = False
    rate_per_second: float = DEFAULT_RATE

    @classmethod
    def from_request(cls, body: Any) -> "Scope":
        """Validate the POST body (``{}`` means everything, label only; ``null`` is refused, so
        that nothing but an explicit request starts a backfill of the whole archive)."""
        if not isinstance(body, Mapping):
            raise BackfillError("the request body must be a JSON object, e.g. {\"Since\": \"2024-01-01\", \"Route\": false}")
        unknown = sorted(set(body) - {"Since", "Studies", "Route", "RatePerSecond"})
        if unknown:
            raise BackfillError(f"unknown field(s) {', '.join(unknown)}; use Since, Studies, Route, RatePerSecond")
        since = None
        if "Since" in body:
            if not isinstance(body["Since"], str):
                raise BackfillError(f"Since: expected a date as a string, YYYY-MM-DD, got {body['Since']!r}")
            since = _parse_since(body["Since"])
        studies: tuple[str, ...] = ()
        if "Studies" in body:
            raw = body["Studies"]
            if not isinstance(raw, list) or not raw or not all(isinstance(s, str) and s.strip() for s in raw):
                raise BackfillError("Studies: expected a non-empty list of Orthanc study IDs or StudyInstanceUIDs")
            studies = tuple(dict.fromkeys(s.strip() for s in raw))
        if since and studies:
            raise BackfillError("give either Since or Studies, not both")
        route = body.get("Route", False)
        if not isinstance(route, bool):
            raise BackfillError(f"Route: expected true or false, got {route!r}")
        rate = body.get("RatePerSecond", DEFAULT_RATE)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.01 <= rate <= 10_000:
            raise BackfillError(f"RatePerSecond: expected a number between 0.01 and 10000, got {rate!r}")
        return cls(since=since, studies=studies, route=route, rate_per_second=float(rate))

    def as_dict(self) -> dict[str, Any]:
        return {
            "Since": self.since.isoformat() if self.since else None,
            "Studies": list(self.studies),
            "Route": self.route,
            "RatePerSecond": self.rate_per_second,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Scope":
        since = data.get("Since")
        return cls(
            since=_dt.date.fromisoformat(since) if since else None,
            studies=tuple(data.get("Studies") or ()),
            route=bool(data.get("Route", False)),
            rate_per_second=float(data.get("RatePerSecond", DEFAULT_RATE)),
        )

    def describe(self) -> str:
        if self.since:
            return f"studies dated {self.since.isoformat()} or later"
        if self.studies:
            return f"{len(self.studies)} stud{'y' if len(self.studies) == 1 else 'ies'}"
        return "every stored instance"


def _parse_since(value: Any) -> _dt.date:
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return _dt.datetime.strptime(text, fmt).date()
        except ValueError:
            pass
    raise BackfillError(f"Since: expected a date as YYYY-MM-DD or YYYYMMDD, got {value!r}")


def _resolve_study(orthanc: Orthanc, ref: str) -> str:
    """An Orthanc study ID as is; a StudyInstanceUID (it has dots) through ``/tools/lookup``."""
    if "." not in ref:
        return ref
    matches = [m for m in orthanc.lookup(ref) if m.get("Type") == "Study"]
    if not matches:
        raise BackfillError(f"Studies: no study with StudyInstanceUID {ref} is stored")
    return str(matches[0]["ID"])


def plan(orthanc: Orthanc, scope: Scope, page_size: int = PAGE_SIZE) -> Iterator[list[str]]:
    """Yield the scope's instance IDs, one page (list) at a time."""
    if scope.studies:
        for ref in scope.studies:
            yield orthanc.study_instances(_resolve_study(orthanc, ref))
        return
    if scope.since:
        query = {"Level": "Study", "Query": {"StudyDate": scope.since.strftime("%Y%m%d") + "-"}, "Expand": False}
        offset = 0
        while True:
            studies = orthanc.find({**query, "Since": offset, "Limit": page_size})
            for study in studies:
                yield orthanc.study_instances(str(study))
            if len(studies) < page_size:
                return
            offset += page_size
    offset = 0
    while True:
        ids = orthanc.instances(offset, page_size)
        if ids:
            yield ids
        if len(ids) < page_size:
            return
        offset += page_size
