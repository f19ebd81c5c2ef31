"""The router's one HTTP client: its own node (cluster claims), Orthanc peers (verify), and tests.

Built on one ``requests.Session`` per server, so connections are kept alive and every call
has the same timeout, credentials, headers and TLS settings. Failures become the
:mod:`~bodypart_router.orthanc_api.errors` hierarchy.

TLS: ``verify`` takes ``requests``' meaning (``True``: the system's CAs, a path: that CA
bundle, ``False``: no check). :meth:`HttpAccess.own_node` reaches this node's own server on
127.0.0.1 and trusts exactly its ``SslCertificate`` without matching the host name, since a
server's certificate is issued for its public name, not for the loopback address.
"""

from __future__ import annotations

import base64
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from .errors import OrthancUnavailable, error_for_status
from .transport import Answer

#: Seconds allowed for one request unless the access says otherwise.
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class HttpAccess:
    """Where an Orthanc's REST API is and how to be let in."""

    url: str
    username: str | None = None
    password: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: ``requests``' ``verify``: True, False, or a CA bundle path.
    verify: bool | str = True
    #: False only to pin a certificate issued for another name (see :meth:`own_node`).
    check_hostname: bool = True
    #: Client certificate (and key file) for servers that require one.
    certificate: tuple[str, str] | str | None = None
    timeout: float = DEFAULT_TIMEOUT

    @property
    def authorization(self) -> str | None:
        if self.username is None:
            return None
        token = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
        return f"Basic {token}"

    @classmethod
    def own_node(cls, orthanc_config: Mapping[str, Any], timeout: float = DEFAULT_TIMEOUT) -> "HttpAccess":
        """This Orthanc's own HTTP server on loopback (``HttpPort``, ``SslEnabled``, and the first
        ``RegisteredUsers`` entry when authentication is on)."""
        port = int(orthanc_config.get("HttpPort", 8042))
        username = password = None
        enabled = orthanc_config.get("AuthenticationEnabled", bool(orthanc_config.get("RemoteAccessAllowed")))
        users = orthanc_config.get("RegisteredUsers") or {}
        if enabled and users:
            username, password = (str(v) for v in next(iter(users.items())))
        if not orthanc_config.get("SslEnabled"):
            return cls(f"http://127.0.0.1:{port}", username, password, timeout=timeout)
        certificate = orthanc_config.get("SslCertificate")
        return cls(f"https://127.0.0.1:{port}", username, password, timeout=timeout,
                   verify=str(certificate) if certificate else False, check_hostname=False)


class _PinnedAdapter(HTTPAdapter):
    """Verifies the server's certificate against the given bundle, whatever name it was issued for."""

    def __init__(self, cafile: str) -> None:
        self._context = ssl.create_default_context(cafile=cafile)
        self._context.check_hostname = False
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        kwargs["assert_hostname"] = False  # urllib3 matches the name again on its own
        super().init_poolmanager(*args, **kwargs)


class HttpClient:
    """REST calls to one Orthanc over HTTP (a :class:`~bodypart_router.orthanc_api.transport.Transport`).

    Each thread gets its own ``requests.Session`` (sessions are not meant to be shared between
    threads), all configured the same way; connections are kept alive within each.
    """

    def __init__(self, access: HttpAccess) -> None:
        self.access = access
        self.base_url = access.url.rstrip("/")
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers.update(self.access.headers)
            if self.access.authorization:
                session.headers["Authorization"] = self.access.authorization
            if self.access.certificate:
                session.cert = self.access.certificate
            if self.base_url.startswith("https") and isinstance(self.access.verify, str) and not self.access.check_hostname:
                session.mount("https://", _PinnedAdapter(self.access.verify))
            else:
                session.verify = self.access.verify
        return session

    def call(self, method: str, uri: str, body: bytes | str | None = None,
             headers: Mapping[str, str] | None = None) -> Answer:
        """One request; a status other than 2xx raises the matching :class:`OrthancError`."""
        try:
            response = self._session().request(method, self.base_url + uri, data=body, headers=dict(headers or {}),
                                               timeout=self.access.timeout)
        except requests.RequestException as exc:  # refused, timeout, TLS failure: no answer
            raise OrthancUnavailable(f"{method} {uri} on {self.base_url}: {exc}") from exc
        if not 200 <= response.status_code < 300:
            detail = response.text[:200].strip()
            raise error_for_status(response.status_code, f"{method} {uri} on {self.base_url}: HTTP "
                                   f"{response.status_code}{': ' + detail if detail else ''}")
        return Answer(response.content, response.headers.get("ETag", ""))
