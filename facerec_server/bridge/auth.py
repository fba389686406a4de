"""Who is asking: authentication for every request on the bridge's port, in one place.

:class:`Authenticator` decides for websocket upgrades (:mod:`.server`) and the web pages'
HTTPS requests (:mod:`.web`) alike: a bearer token from the tokens file, a web session
cookie made by a log-in with such a token, a verified client certificate, or explicitly
nobody. Failed token checks back off per source address; sessions are bounded. Tokens are
compared with :func:`hmac.compare_digest` and never logged or kept in a URL by the bridge.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from . import protocol
from .config import BridgeConfig, load_tokens


# --- who is asking: authentication in one place --------------------------------------------

@dataclass(frozen=True)
class Principal:
    """An authenticated client. ``bound``: its credential decides its ROS-visible name
    (``name``; a token's name or a certificate's CN), the client cannot choose another."""

    name: str
    bound: bool


ANONYMOUS = Principal("anonymous", bound=False)


@dataclass(frozen=True)
class AuthResult:
    """``principal`` when authenticated; else ``retry_after`` > 0 when the source address is
    backing off after failed logins (answer 429 without checking), 0 for a failed check."""

    principal: Optional[Principal]
    retry_after: float = 0.0


class _LoginBackoff:
    """Failed logins per source address: after FREE failures each further attempt must wait
    1 s, doubling per failure up to MAX_DELAY s. A success forgets the address; so do
    FORGET s without a failure. At most ``size`` addresses (the stalest are dropped)."""

    FREE, MAX_DELAY, FORGET = 5, 60.0, 900.0

    def __init__(self, size: int = 4096):
        self.size = size
        self._table: "OrderedDict[str, Tuple[int, float, float]]" = OrderedDict()

    def retry_after(self, address: str, now: float) -> float:
        entry = self._table.get(address)
        if entry is None:
            return 0.0
        failures, blocked_until, last = entry
        if now - last > self.FORGET:
            del self._table[address]
            return 0.0
        return max(0.0, blocked_until - now)

    def failed(self, address: str, now: float) -> None:
        failures, _, last = self._table.pop(address, (0, 0.0, now))
        failures = 1 if now - last > self.FORGET else failures + 1
        delay = min(self.MAX_DELAY, 2.0 ** (failures - self.FREE)) if failures >= self.FREE \
            else 0.0
        self._table[address] = (failures, now + delay, now)
        while len(self._table) > self.size:
            self._table.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._table.pop(address, None)


class _Sessions:
    """Web log-in sessions: an unguessable id (the session cookie) -> the principal whose
    token logged in. Bounded: at most ``size`` sessions (the least recently used is dropped);
    a session ends after IDLE s unused or MAX_AGE s in all. Ids are kept as SHA-256 digests,
    so the table never holds a usable cookie."""

    IDLE, MAX_AGE = 8 * 3600.0, 7 * 86400.0

    def __init__(self, size: int = 256):
        self.size = size
        self._table: "OrderedDict[bytes, Tuple[Principal, float, float]]" = OrderedDict()

    @staticmethod
    def _key(session_id: str) -> bytes:
        return hashlib.sha256(session_id.encode("utf-8", "replace")).digest()

    def create(self, principal: Principal, now: float) -> str:
        session_id = secrets.token_urlsafe(32)
        self._table[self._key(session_id)] = (principal, now, now)
        while len(self._table) > self.size:
            self._table.popitem(last=False)
        return session_id

    def principal(self, session_id: str, now: float) -> Optional[Principal]:
        key = self._key(session_id)
        entry = self._table.get(key)
        if entry is None:
            return None
        principal, created, last = entry
        if now - last > self.IDLE or now - created > self.MAX_AGE:
            del self._table[key]
            return None
        self._table[key] = (principal, created, now)
        self._table.move_to_end(key)
        return principal

    def end(self, session_id: str) -> None:
        self._table.pop(self._key(session_id), None)

    def __len__(self) -> int:
        return len(self._table)


class Authenticator:
    """Who is asking, for every request on the bridge's port: websocket upgrades and the web
    pages' HTTPS requests alike.

    * ``token``: ``Authorization: Bearer <token>`` (or ``?token=`` in a websocket URL),
      compared in constant time with every token of the tokens file; the principal is the
      token's name. A browser logs in once (:meth:`login`) and then presents the session
      cookie :data:`SESSION_COOKIE` instead.
    * ``mtls``: the TLS layer verified the client certificate; the principal is its CN.
    * ``none``: everyone is ``anonymous`` and chooses their own name.

    Failed token checks are counted per source address (:class:`_LoginBackoff`); while an
    address backs off its requests are refused without a check (``retry_after``). A request
    that presents no credential at all is refused but not counted (nothing was guessed)."""

    def __init__(self, config: BridgeConfig):
        self.mode = config.auth
        self._tokens = load_tokens(config.tokens_file, config.label("tokens_file")) \
            if config.auth == "token" else []
        self._backoff = _LoginBackoff()
        self.sessions = _Sessions()

    def check(self, headers, path: str, peercert: Optional[dict], address: str,
              query_token: bool = True, cookie: bool = True) -> AuthResult:
        """``query_token``: accept ``?token=`` in ``path`` (websocket clients of the original
        protocol); the web pages never do. ``cookie``: accept the session cookie (not for a
        request a page of another origin made)."""
        if self.mode == "none":
            return AuthResult(ANONYMOUS)
        if self.mode == "mtls":  # the TLS handshake already verified the certificate
            return AuthResult(Principal(_certificate_name(peercert or {}), bound=True))
        now = time.monotonic()
        wait = self._backoff.retry_after(address, now)
        if wait > 0:
            return AuthResult(None, retry_after=wait)
        candidate = _bearer_token(headers, path if query_token else "")
        if candidate is None:
            session_id = session_cookie(headers) if cookie else None
            principal = self.sessions.principal(session_id, now) if session_id else None
            return AuthResult(principal)
        return self._verify(candidate, address, now)

    def login(self, token: str, address: str) -> Tuple[AuthResult, Optional[str]]:
        """A web log-in with ``token`` (the form's field): ``(result, session_id)``; the id
        is the cookie's value, None unless the token is right (failures back off as in
        :meth:`check`). Only for ``token`` mode."""
        now = time.monotonic()
        wait = self._backoff.retry_after(address, now)
        if wait > 0:
            return AuthResult(None, retry_after=wait), None
        result = self._verify(token, address, now)
        if result.principal is None:
            return result, None
        return result, self.sessions.create(result.principal, now)

    def logout(self, headers) -> None:
        session_id = session_cookie(headers)
        if session_id:
            self.sessions.end(session_id)

    def _verify(self, candidate: str, address: str, now: float) -> AuthResult:
        name = self._token_name(candidate)
        if name is None:
            self._backoff.failed(address, now)
            return AuthResult(None)
        self._backoff.succeeded(address)
        return AuthResult(Principal(name, bound=True))

    def _token_name(self, candidate: Optional[str]) -> Optional[str]:
        if not candidate:
            return None
        found = None
        for name, token in self._tokens:  # no early exit: timing does not reveal the index
            if hmac.compare_digest(candidate.encode(), token.encode()):
                found = name
        return found


#: The web session's cookie. The ``__Host-`` prefix makes browsers insist on Secure, Path=/
#: and no Domain; the bridge also sets HttpOnly and SameSite=Strict.
SESSION_COOKIE = "__Host-facerec-session"


def session_cookie(headers) -> Optional[str]:
    """The value of the session cookie in a request's Cookie header(s), or None."""
    for header in headers.get_all("Cookie") if hasattr(headers, "get_all") \
            else [headers.get("Cookie", "")]:
        for part in (header or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == SESSION_COOKIE and value:
                return value
    return None


def _bearer_token(headers, path: str) -> Optional[str]:
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    values = parse_qs(urlsplit(path).query).get("token")
    return values[0] if values else None


def _certificate_name(cert: dict) -> str:
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return protocol.clean_name(value)
    for _, value in cert.get("subjectAltName", ()):
        return protocol.clean_name(value)
    return "client-certificate"
