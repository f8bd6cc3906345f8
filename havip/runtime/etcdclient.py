"""A small layer over etcd3gw (etcd's gRPC gateway, the /v3 JSON API): several endpoints,
user/password authentication, a deadline on every call, and errors in words.

etcd3gw speaks to one endpoint and knows no authentication; etcd's gateway does both
with plain HTTP (`/v3/auth/authenticate` returns a token that goes in the
`Authorization` header). One `Gateway` is used by one thread at a time (requests'
sessions are not meant to be shared); the lease keeps one for its keep-alive thread and
one for everything else.

The API path is fixed at /v3/ (etcd 3.4 and later; Debian 12 ships 3.4) instead of
etcd3gw's discovery, which would cost a round trip to /version first.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from havip.errors import AdapterError

API_PATH = "/v3/"


class EtcdError(AdapterError):
    """etcd answered, or could not be reached; `retry` says whether another endpoint may do better."""

    def __init__(self, message: str, *, retry: bool = False):
        super().__init__(message)
        self.retry = retry


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def unb64(text: str | None) -> str:
    return base64.b64decode(text or "").decode(errors="replace")


def _why(exc: Exception) -> str:
    """The useful end of a requests/urllib3 error message."""
    text = getattr(exc, "detail_text", None) or str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        m = re.search(r"certificate verify failed: ([^(')\"]+)", text)
        return f"TLS certificate verify failed ({(m[1] if m else 'unknown issuer').strip()}): is the CA right?"
    low = text.lower()
    if any(w in low for w in ("bad certificate", "bad_certificate", "certificate required", "certificate_required")):
        return "TLS: etcd rejected our client certificate (none given, or not signed by its CA: milvus.lease.cert, key)"
    if "EOF occurred in violation of protocol" in text:
        return ("TLS: etcd ended the handshake (does it want a client certificate signed by its CA? "
                "milvus.lease.cert, key)")
    if "SSL" in text or "TLS" in text:
        m = re.search(r"\[SSL[^\]]*\] ([^(')\"]+)", text) or re.search(r"SSLError\((?:SSLError\()?[^,]*,? ?'?([^'\")]+)", text)
        return f"TLS error: {m[1].strip() if m else text[-160:]}"
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if m:
        return m[1].strip().lower()
    if "timed out" in text.lower():
        return "timed out"
    return text[:160]


class Gateway:
    """Calls etcd's /v3 JSON API on the first endpoint that answers."""

    def __init__(self, endpoints: list[str], *, timeout: float, ca: str | None = None, cert: str | None = None,
                 key: str | None = None, user: str | None = None, password: str | None = None,
                 clock: Callable[[], float] = time.monotonic, client_factory=None):
        if not endpoints:
            raise AdapterError("no etcd endpoints configured")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.user, self.password = user, password
        self.clock = clock
        self._factory = client_factory or (lambda url: _client(url, ca=ca, cert=cert, key=key))
        self._clients: dict[str, object] = {}
        self._tokens: dict[str, str] = {}
        self.current = 0                  # the endpoint that answered last
        self.last_error: str | None = None

    @property
    def endpoint(self) -> str:
        return self.endpoints[self.current]

    def _client(self, url: str):
        c = self._clients.get(url)
        if c is None:
            c = self._clients[url] = self._factory(url)
        return c

    def call(self, path: str, body: dict, *, deadline: float | None = None) -> dict:
        """POST `body` to /v3/`path`, trying each endpoint once, starting with the last
        that answered, until one answers or `deadline` (monotonic) passes."""
        deadline = deadline if deadline is not None else self.clock() + self.timeout * len(self.endpoints)
        errors: list[str] = []
        for i in range(len(self.endpoints)):
            left = deadline - self.clock()
            if left <= 0.01:
                break
            idx = (self.current + i) % len(self.endpoints)
            url = self.endpoints[idx]
            try:
                out = self._post(url, path, body, min(self.timeout, left))
            except EtcdError as exc:
                errors.append(f"{url}: {exc}")
                if not exc.retry:
                    self.last_error = errors[-1]
                    raise EtcdError(errors[-1]) from None
                continue
            self.current = idx
            self.last_error = None
            return out
        self.current = (self.current + 1) % len(self.endpoints)
        self.last_error = "; ".join(errors) or "no time left to ask etcd"
        raise EtcdError(f"etcd unreachable: {self.last_error}", retry=True)

    def _post(self, url: str, path: str, body: dict, timeout: float, *, again: bool = True) -> dict:
        from etcd3gw import exceptions as ex

        client = self._client(url)
        client.timeout = timeout
        if self.user and url not in self._tokens:
            self._authenticate(url, client)
        try:
            return client.post(client.get_url(path), json=body)
        except (ex.ConnectionFailedError, ex.ConnectionTimeoutError) as exc:
            raise EtcdError(_why(exc), retry=True) from None
        except ex.Etcd3Exception as exc:
            detail = _detail(exc)
            if self.user and again and ("invalid auth token" in detail or "unauthenticated" in detail.lower()):
                self._tokens.pop(url, None)              # simple tokens expire (--auth-token-ttl)
                client.session.headers.pop("Authorization", None)
                return self._post(url, path, body, timeout, again=False)
            retry = isinstance(exc, ex.InternalServerError) and ("leader" in detail or "timed out" in detail)
            raise EtcdError(detail, retry=retry) from None
        except ValueError as exc:         # not JSON: not an etcd gateway
            raise EtcdError(f"not an etcd /v3 gateway answer ({exc})", retry=True) from None

    def _authenticate(self, url: str, client) -> None:
        from etcd3gw import exceptions as ex

        try:
            out = client.post(client.get_url("auth/authenticate"), json={"name": self.user, "password": self.password})
        except (ex.ConnectionFailedError, ex.ConnectionTimeoutError) as exc:
            raise EtcdError(_why(exc), retry=True) from None
        except ex.Etcd3Exception as exc:
            raise EtcdError(f"etcd refused user {self.user}: {_detail(exc)}") from None
        token = out.get("token")
        if not token:
            raise EtcdError(f"etcd gave user {self.user} no token (is authentication enabled?)")
        self._tokens[url] = token
        client.session.headers["Authorization"] = token

    def close(self) -> None:
        for c in self._clients.values():
            try:
                c.session.close()
            except Exception:  # noqa: BLE001 - closing must go on
                pass
        self._clients.clear()


def _detail(exc: Exception) -> str:
    """etcd's own message from a gateway error body ({"error": ..., "code": ...})."""
    import json

    text = getattr(exc, "detail_text", None) or ""
    try:
        body = json.loads(text)
        msg = body.get("error") or body.get("message") or text
    except (ValueError, AttributeError):
        msg = text or str(exc) or type(exc).__name__
    return str(msg).removeprefix("etcdserver: ")[:200]


def _client(url: str, *, ca, cert, key):
    import requests
    from etcd3gw.client import Etcd3Client

    class Session(requests.Session):
        # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's own
        # `verify` (it only looks at the per-request value); the configured CA must win.
        def merge_environment_settings(self, url, proxies, stream, verify, cert_):
            return super().merge_environment_settings(url, proxies, stream,
                                                      self.verify if verify is None else verify, cert_)

    session = Session()
    if ca:
        session.verify = ca
    if cert and key:
        session.cert = (cert, key)
    u = urlsplit(url)
    host = (u.hostname or "").strip("[]")
    return Etcd3Client(host=host, port=u.port or 2379, protocol=u.scheme, api_path=API_PATH, session=session)
