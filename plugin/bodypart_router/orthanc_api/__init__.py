"""The one boundary between the router and Orthanc.

:class:`Orthanc` (``interface.py``) is what the router asks of Orthanc: forward to a
destination and follow the job, ask a destination whether it already holds an instance,
claim an instance for this node, find and list instances, read and write metadata and
labels. :class:`OrthancClient` implements it over Orthanc's REST API, reached in process by
the adapter (``orthanc_plugin/host.py``, the only module that calls ``orthanc.RestApi*``) or
over HTTP by :class:`HttpClient`, the router's one HTTP client. Every failure is an
:class:`OrthancError`. Destination kinds live in :mod:`.destinations`, one module each.

Outside the package it uses the standard library and ``requests``; never ``orthanc``.

May import: config, errors.
"""

from . import destinations
from .client import OrthancClient
from .destinations import peers_from_config
from .errors import (
    CannotAsk,
    OrthancConflict,
    OrthancError,
    OrthancNotFound,
    OrthancRejected,
    OrthancUnavailable,
    Unreachable,
)
from .http import HttpAccess, HttpClient
from .interface import InstanceUids, Job, Metadata, Orthanc
from .transport import Answer, Transport

__all__ = [
    "Answer", "CannotAsk", "HttpAccess", "HttpClient", "InstanceUids", "Job", "Metadata", "Orthanc",
    "OrthancClient", "OrthancConflict", "OrthancError", "OrthancNotFound", "OrthancRejected",
    "OrthancUnavailable", "Transport", "Unreachable", "destinations", "peers_from_config",
]
