"""What the websocket bridge is configured with, checked before anything starts.

:class:`BridgeConfig` (the ROS node maps its ``bridge.*`` parameters onto it),
:func:`load_tokens` (the tokens file), :func:`make_ssl_context` (certificate, key, client CA)
and :func:`read_config_file`, which every file the bridge reads goes through: a regular file
of sane size (a FIFO would block the start-up). Every problem is a :class:`BridgeConfigError`
with one line naming the setting, its value and what to do; a token is never shown.
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from facerec_server.core import files

from . import protocol
from .protocol import ClientSettings

AUTH_MODES = ("token", "mtls", "none")
CERT_HELP = (
    "the bridge only serves TLS (wss://): set certfile and keyfile. For a self-signed "
    "test pair run `python3 -m facerec_server.bridge.certs --out-dir <dir> --host <name-or-ip>` "
    "(writes ca.pem, server.pem, server.key; give clients --cafile ca.pem)")


class BridgeConfigError(ValueError):
    """The bridge cannot start with this configuration (the message says why and what to do)."""


MIN_TOKEN_LENGTH = 16  # characters; `secrets.token_urlsafe(32)` gives 43
MAX_CONFIG_FILE = 1024 * 1024  # bytes: a tokens file, certificate chain or key is far smaller
TOKEN_HELP = "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"

# (field, lowest, highest) of the numeric settings, checked before anything starts
_RANGES = (("port", 0, 65535), ("max_frame_size", 1024, 64 * 1024 * 1024),
           ("max_clients", 1, 1024), ("max_pending", 1, 4096),
           ("max_message_rate", 0.0, 10000.0), ("send_queue_size", 1, 64),
           ("control_queue_size", 1, 4096), ("workers", 1, 64))


@dataclass
class BridgeConfig:
    """Bridge parameters (the ROS node maps its parameters 1:1 onto these fields)."""

    host: str = "0.0.0.0"
    port: int = 50000  # 0 = pick a free port (tests); see BridgeServer.port
    certfile: Optional[str] = None  # PEM certificate chain (required)
    keyfile: Optional[str] = None  # PEM private key (required)
    auth: str = "token"  # "token" | "mtls" | "none" (none must be explicit; warns)
    tokens_file: Optional[str] = None  # one "name:token" (or bare token) per line; '#' comments
    ca_file: Optional[str] = None  # CA bundle that signs client certificates (auth=mtls)
    max_frame_size: int = 2 * 1024 * 1024  # bytes per websocket message (-> close 1009)
    max_clients: int = 16  # more -> close 1013
    max_pending: int = 32  # connections still in their TLS/websocket handshake; more: the
    #                        oldest is dropped (bounds what idle connections cost)
    max_message_rate: float = 60.0  # messages/s per client, token bucket; 0 = unlimited
    rate_burst: Optional[float] = None  # bucket capacity; default 2 s worth of messages
    send_queue_size: int = 2  # result sets waiting per client before the stalest is dropped
    control_queue_size: int = 64  # other outgoing messages (echoes) waiting per client
    write_limit: int = 64 * 1024  # transport write buffer high-water mark, bytes
    send_empty_results: bool = True  # send [] when nothing was found (clients' flow control)
    workers: int = 1  # processor threads shared by all clients
    ping_interval: Optional[float] = 20.0
    ping_timeout: Optional[float] = 20.0
    open_timeout: Optional[float] = 10.0  # TLS handshake, then the websocket handshake
    default_settings: ClientSettings = field(default_factory=ClientSettings)
    name_prefix: str = ""  # before field names in error messages (the ROS node: "bridge.")

    def label(self, name: str) -> str:
        """How error messages name a field (e.g. ``bridge.certfile`` for the ROS node)."""
        return self.name_prefix + name

    def validate(self) -> None:
        """Raise BridgeConfigError (one line: the value, and what to do) for anything that
        would stop the bridge later: modes, ranges, files, tokens, certificates."""
        if self.auth not in AUTH_MODES:
            raise BridgeConfigError(f"auth must be one of {AUTH_MODES}, got {self.auth!r}")
        for name, low, high in _RANGES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not low <= value <= high:
                raise BridgeConfigError(f"{self.label(name)} {value!r} is out of range: use "
                                        f"{low}..{high}")
        if not self.certfile or not self.keyfile:
            raise BridgeConfigError(CERT_HELP)
        if self.auth == "token":
            if not self.tokens_file:
                raise BridgeConfigError(
                    f"{self.label('auth')}=token needs {self.label('tokens_file')} (one "
                    "name:token per line); use auth=none explicitly to run without "
                    "authentication")
            load_tokens(self.tokens_file, self.label("tokens_file"))
        if self.auth == "mtls" and not self.ca_file:
            raise BridgeConfigError(f"{self.label('auth')}=mtls needs {self.label('ca_file')}: "
                                    "the CA that signs client certificates (see "
                                    "facerec_server.bridge.certs --client)")
        make_ssl_context(self)


# --- files the bridge reads ----------------------------------------------------------------

def read_config_file(label: str, path: str, max_bytes: int = MAX_CONFIG_FILE) -> bytes:
    """The bytes of a file the bridge is configured with. It must be a regular file of at
    most ``max_bytes``: a FIFO or device would block the start-up or never end
    (:func:`facerec_server.core.files.read_regular`)."""
    try:
        return files.read_regular(path, label, max_bytes)
    except files.UnusableFile as exc:
        hint = f"; {CERT_HELP}" if label.endswith(("certfile", "keyfile")) \
            and str(exc).startswith("cannot read") else ""
        raise BridgeConfigError(f"{exc}{hint}") from None


def load_tokens(path: str, label: str = "tokens_file") -> List[Tuple[str, str]]:
    """(name, token) pairs from ``path``: one ``name:token`` per line (split at the first
    colon), or a bare token, then named ``token<line>``; blank lines and lines starting
    with '#' are ignored. The name is the ROS name of the clients that use the token.
    Refused (BridgeConfigError, never showing a token): no token, a token shorter than
    MIN_TOKEN_LENGTH, a name that is not printable text of at most
    ``protocol.MAX_NAME_LENGTH`` characters, two names that give the same ROS name."""
    try:
        text = read_config_file(label, path).decode("utf-8")
    except UnicodeDecodeError:
        raise BridgeConfigError(f"{label} {path!r} is not UTF-8 text") from None
    tokens: List[Tuple[str, str]] = []
    ros_names: Dict[str, Tuple[str, int]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        if not sep:
            name, token = "", line
        name, token = name.strip() or f"token{number}", token.strip()
        where = f"{label} {path!r} line {number}"
        if len(token) < MIN_TOKEN_LENGTH:
            raise BridgeConfigError(f"{where}: the token has {len(token)} characters; use at "
                                    f"least {MIN_TOKEN_LENGTH} ({TOKEN_HELP})")
        if protocol.clean_name(name) != name:
            raise BridgeConfigError(f"{where}: the name {name[:80]!r} must be printable text of "
                                    f"at most {protocol.MAX_NAME_LENGTH} characters")
        ros_name = protocol.sanitize_name(name)
        other = ros_names.setdefault(ros_name, (name, number))
        if other[0] != name:
            raise BridgeConfigError(f"{where}: the names {other[0]!r} (line {other[1]}) and "
                                    f"{name!r} give the same ROS name {ros_name!r}; rename one")
        tokens.append((name, token))
    if not tokens:
        raise BridgeConfigError(f"{label} {path!r} holds no token ({TOKEN_HELP})")
    return tokens


_PEM_CERT = b"-----BEGIN CERTIFICATE-----"
_PEM_KEY = b"PRIVATE KEY-----"


def make_ssl_context(config: BridgeConfig) -> ssl.SSLContext:
    """The server's TLS context; BridgeConfigError names the file and the fix."""
    certfile, keyfile = config.label("certfile"), config.label("keyfile")
    cert = read_config_file(certfile, config.certfile)
    key = read_config_file(keyfile, config.keyfile)
    if _PEM_CERT not in cert:
        what = "a private key" if _PEM_KEY in cert else "no PEM certificate"
        raise BridgeConfigError(f"{certfile} {config.certfile!r} holds {what}, not a "
                                f"certificate: give the certificate chain (server.pem) as "
                                f"{certfile} and its key (server.key) as {keyfile}")
    if _PEM_KEY not in key:
        what = "a certificate" if _PEM_CERT in key else "no PEM private key"
        raise BridgeConfigError(f"{keyfile} {config.keyfile!r} holds {what}, not a private "
                                "key: give the certificate's key (server.key)")
    if b"ENCRYPTED" in key:
        raise BridgeConfigError(f"{keyfile} {config.keyfile!r} is encrypted: give an "
                                "unencrypted key readable only by the bridge's user (chmod 600)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.certfile, config.keyfile, password="")
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise BridgeConfigError(f"{keyfile} {config.keyfile!r} does not belong to the "
                                    f"certificate in {certfile} {config.certfile!r}: give the "
                                    "key made with that certificate") from None
        raise BridgeConfigError(f"cannot load {certfile} {config.certfile!r} with {keyfile} "
                                f"{config.keyfile!r}: {exc.reason or exc}") from None
    if config.auth == "mtls":
        ca_file = config.label("ca_file")
        ca = read_config_file(ca_file, config.ca_file)
        if _PEM_CERT not in ca:
            raise BridgeConfigError(f"{ca_file} {config.ca_file!r} holds no PEM certificate: give "
                                    "the CA certificate(s) that sign client certificates (PEM, "
                                    "e.g. ca.pem of facerec_server.bridge.certs)")
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(cadata=ca.decode("ascii", "replace"))
        except ssl.SSLError as exc:
            raise BridgeConfigError(f"cannot load {ca_file} {config.ca_file!r}: "
                                    f"{exc.reason or exc}; give PEM CA certificates") from None
    return context
