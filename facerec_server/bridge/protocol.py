"""The iot-facerecognition websocket protocol: pure parsing and encoding, no I/O.

Wire format (compatible with the original iot-facerecognition server and clients):

* **Binary** messages client -> server are JPEG frames.
* **Text** messages are JSON objects ``{"command": n, "context": ...}`` (``context`` absent
  for INIT_REQUEST). Clients may also send their commands as ``<chr(n)>:<context>`` (one
  character whose code point is the command number, a colon, then the context as text; the
  original Python client 1.2.0 does); :func:`parse_text` accepts both for client commands.
  Server -> client messages are always JSON (:func:`encode`): the original clients
  ``json.loads`` every text message they receive.

Commands (numbers are part of the contract):

====  ====================================  =====================================================
 n    name                                  context
====  ====================================  =====================================================
 1    SETTING_NAME                          string (client name; echoed back as applied)
 2    MESSAGE                               string (client -> server, logged)
 3    MESSAGE_TAG_FACE                      server -> client: ``[{"tag", "x", "y", "width",
                                            "height"}]``; tag ``""`` for an unknown face
 4    MESSAGE_TAG_OBJECT                    server -> client: ``[{"label", "prediction"}]``
 5    SETTING_OBJDETECTIONENABLED           bool (echoed back)
 6    SETTING_LABELCOUNT                    unsigned int (echoed back)
 7    SETTING_DETERMINISTICOBJECTDETECTION  bool (echoed back)
 8    SETTING_FACERECOGNITIONENABLED        bool (echoed back)
 9    INIT_REQUEST                          server -> client on connect, no context
====  ====================================  =====================================================
"""
from __future__ import annotations

import dataclasses
import enum
import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Union

MAX_NAME_LENGTH = 64
MAX_LABEL_COUNT = 2 ** 32 - 1
DEFAULT_NAME = "noname"  # what the original server used for an empty name


class Command(enum.IntEnum):
    SETTING_NAME = 1
    MESSAGE = 2
    MESSAGE_TAG_FACE = 3
    MESSAGE_TAG_OBJECT = 4
    SETTING_OBJDETECTIONENABLED = 5
    SETTING_LABELCOUNT = 6
    SETTING_DETERMINISTICOBJECTDETECTION = 7
    SETTING_FACERECOGNITIONENABLED = 8
    INIT_REQUEST = 9


SETTING_COMMANDS = frozenset({
    Command.SETTING_NAME, Command.SETTING_OBJDETECTIONENABLED, Command.SETTING_LABELCOUNT,
    Command.SETTING_DETERMINISTICOBJECTDETECTION, Command.SETTING_FACERECOGNITIONENABLED,
})
BOOL_SETTINGS = {
    Command.SETTING_OBJDETECTIONENABLED: "objects_enabled",
    Command.SETTING_DETERMINISTICOBJECTDETECTION: "deterministic",
    Command.SETTING_FACERECOGNITIONENABLED: "faces_enabled",
}
# Commands a client may send to the server.
CLIENT_COMMANDS = SETTING_COMMANDS | {Command.MESSAGE}
# Commands a server may send to a client.
SERVER_COMMANDS = SETTING_COMMANDS | {
    Command.MESSAGE, Command.MESSAGE_TAG_FACE, Command.MESSAGE_TAG_OBJECT, Command.INIT_REQUEST}


class ProtocolError(ValueError):
    """A text message that is not a valid command. ``kind`` is a short machine-readable
    category (``malformed``, ``unknown_command``, ``bad_context``) used for statistics;
    ``reason`` is the human-readable explanation."""

    def __init__(self, kind: str, reason: str):
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class Message:
    """One parsed text message. ``context`` is already typed for known commands:
    ``str`` for names and messages, ``bool`` / ``int`` for settings, ``None`` for
    INIT_REQUEST, a list of :class:`FaceTag` / :class:`ObjectTag` for results."""

    command: Command
    context: Any = None
    legacy: bool = False  # True when it arrived as "<chr(n)>:<context>"


@dataclass(frozen=True)
class FaceTag:
    tag: str
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class ObjectTag:
    label: str
    prediction: float


@dataclass
class ClientSettings:
    """Per-client settings, with the original server's defaults."""

    name: str = DEFAULT_NAME
    faces_enabled: bool = True
    objects_enabled: bool = True
    label_count: int = 5
    deterministic: bool = False

    def copy(self) -> "ClientSettings":
        return dataclasses.replace(self)

    def apply(self, message: Message) -> bool:
        """Apply a setting message; return False when ``message`` is not a setting."""
        if message.command == Command.SETTING_NAME:
            self.name = message.context
        elif message.command == Command.SETTING_LABELCOUNT:
            self.label_count = message.context
        elif message.command in BOOL_SETTINGS:
            setattr(self, BOOL_SETTINGS[message.command], message.context)
        else:
            return False
        return True

    def value_of(self, command: Command) -> Any:
        if command == Command.SETTING_NAME:
            return self.name
        if command == Command.SETTING_LABELCOUNT:
            return self.label_count
        return getattr(self, BOOL_SETTINGS[command])

    def to_messages(self) -> List[str]:
        """The text messages a client sends to announce all its settings (name first)."""
        return [encode(Command.SETTING_NAME, self.name),
                encode(Command.SETTING_FACERECOGNITIONENABLED, self.faces_enabled),
                encode(Command.SETTING_OBJDETECTIONENABLED, self.objects_enabled),
                encode(Command.SETTING_LABELCOUNT, self.label_count),
                encode(Command.SETTING_DETERMINISTICOBJECTDETECTION, self.deterministic)]


# --- context conversion ---------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, float) and math.isfinite(value):
        return value != 0.0
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise ProtocolError("bad_context", f"expected a boolean, got {_describe(value)}")


_ASCII_DIGITS = re.compile(r"[0-9]{1,20}")  # MAX_LABEL_COUNT has 10 digits


def _to_unsigned(value: Any) -> int:
    if isinstance(value, bool):
        raise ProtocolError("bad_context", "expected an unsigned integer, got a boolean")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and _ASCII_DIGITS.fullmatch(value.strip()):
        value = int(value.strip())  # ASCII only: str.isdigit() also takes '²', which int() refuses
    if isinstance(value, int) and 0 <= value <= MAX_LABEL_COUNT:
        return value
    raise ProtocolError("bad_context", f"expected an unsigned integer, got {_describe(value)}")


def _to_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ProtocolError("bad_context", f"expected a string, got {_describe(value)}")


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def clean_name(value: str) -> str:
    """A client name as the server stores it: control characters removed, whitespace
    trimmed, at most MAX_NAME_LENGTH characters, ``noname`` when empty."""
    name = "".join(ch for ch in value if ch.isprintable()).strip()[:MAX_NAME_LENGTH]
    return name or DEFAULT_NAME


def _face_tags(value: Any) -> List[FaceTag]:
    if not isinstance(value, list):
        raise ProtocolError("bad_context", "face tags must be a list")
    try:
        return [FaceTag(str(item.get("tag", "")), int(item["x"]), int(item["y"]),
                        int(item["width"]), int(item["height"])) for item in value]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ProtocolError("bad_context", f"bad face tag: {exc!r}") from None


def _object_tags(value: Any) -> List[ObjectTag]:
    if not isinstance(value, list):
        raise ProtocolError("bad_context", "object tags must be a list")
    try:
        return [ObjectTag(str(item["label"]), float(item["prediction"])) for item in value]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ProtocolError("bad_context", f"bad object tag: {exc!r}") from None


def _convert(command: Command, context: Any, legacy: bool) -> Any:
    if command in (Command.SETTING_NAME, Command.MESSAGE):
        text = _to_string(context)
        return clean_name(text) if command == Command.SETTING_NAME else text
    if command == Command.SETTING_LABELCOUNT:
        return _to_unsigned(context)
    if command in BOOL_SETTINGS:
        return _to_bool(context)
    if command == Command.INIT_REQUEST:
        return None
    if legacy:  # results are JSON documents only
        raise ProtocolError("bad_context", f"command {int(command)} ({command.name}) is sent "
                                           "as JSON only, not as '<chr(n)>:<context>'")
    if command == Command.MESSAGE_TAG_FACE:
        return _face_tags(context)
    return _object_tags(context)


# --- parsing and encoding -------------------------------------------------------------------

def _parse_int(digits: str) -> Union[int, float]:
    """JSON integers; beyond 40 digits a float (inf for very long ones), so that a huge number
    is refused as a bad value instead of costing int()'s quadratic conversion or its
    4300-digit limit (ValueError)."""
    return int(digits) if len(digits) <= 40 else float(digits)


def parse_text(text: Union[str, bytes], allowed: Optional[Iterable[Command]] = None) -> Message:
    """Parse one text message into a :class:`Message` or raise :class:`ProtocolError`.

    ``allowed`` restricts the accepted commands (e.g. :data:`CLIENT_COMMANDS` on the
    server); other known command numbers are reported as ``unknown_command`` too.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("malformed", "text message is not valid UTF-8") from None
    legacy = len(text) >= 2 and text[1] == ":" and not text.lstrip().startswith("{")
    if legacy:
        number, context = ord(text[0]), text[2:]
    else:
        try:
            document = json.loads(text, parse_int=_parse_int)
        except (ValueError, RecursionError):
            raise ProtocolError("malformed", "not JSON and not '<chr(n)>:<context>'") from None
        if not isinstance(document, dict):
            raise ProtocolError("malformed", "JSON message is not an object")
        number = document.get("command")
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        if not isinstance(number, int) or isinstance(number, bool):
            raise ProtocolError("malformed", "missing or non-integer 'command'")
        context = document.get("context")
    try:
        command = Command(number)
    except ValueError:
        raise ProtocolError("unknown_command", f"unknown command {number}") from None
    if allowed is not None and command not in allowed:
        raise ProtocolError("unknown_command", f"command {int(command)} ({command.name}) "
                                               "is not accepted in this direction")
    return Message(command, _convert(command, context, legacy), legacy)


def encode(command: Command, context: Any = None) -> str:
    """The JSON text for one command (compact; ``context`` omitted when None)."""
    document = {"command": int(command)}
    if context is not None:
        document["context"] = context
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_legacy(command: Command, context: Any = "") -> str:
    """A client command in the ``<chr(n)>:<context>`` form (booleans as 0/1), as the original
    Python client sends it. The bridge accepts this form but never sends it."""
    if isinstance(context, bool):
        context = int(context)
    return f"{chr(int(command))}:{context}"


def face_tags(faces) -> List[dict]:
    """``FaceResult`` list (boxes left, top, right, bottom) -> MESSAGE_TAG_FACE context."""
    tags = []
    for face in faces:
        left, top, right, bottom = (int(v) for v in face.box)
        tags.append({"tag": face.name or "", "x": left, "y": top,
                     "width": right - left, "height": bottom - top})
    return tags


def object_tags(objects, label_count: Optional[int] = None) -> List[dict]:
    """``ObjectResult`` list -> MESSAGE_TAG_OBJECT context, highest score first, at most
    ``label_count`` entries. Non-finite scores are sent as 0 (JSON has no NaN)."""
    ordered = sorted(objects, key=lambda o: -o.score if math.isfinite(o.score) else 0.0)
    if label_count is not None:
        ordered = ordered[:label_count]
    return [{"label": o.label, "prediction": float(o.score) if math.isfinite(o.score) else 0.0}
            for o in ordered]


_TOPIC_BAD = re.compile(r"[^A-Za-z0-9_]+")


def sanitize_name(name: str) -> str:
    """A ROS-name-safe token for a client name (for topics such as
    ``~/clients/<token>/image/compressed``): letters, digits and single underscores, not
    starting with a digit or underscore, lower case. Different names may map to the same
    token; the bridge keeps the tokens of connected clients unique."""
    token = _TOPIC_BAD.sub("_", name).strip("_").lower()
    token = re.sub(r"_+", "_", token)
    if not token or token[0].isdigit():
        token = "c_" + token if token else "noname"
    return token


# --- secrets in logs ------------------------------------------------------------------------

_SECRETS = (
    (re.compile(r"(?i)(authorization\s*[:=]\s*'?\s*\w+\s+)[^\s',\]]+"), r"\1***"),
    (re.compile(r"(?i)([?&]token=)[^&\s'\"]+"), r"\1***"),
    (re.compile(r"(?i)(cookie\s*[:=]\s*'?)[^'\n\]]+"), r"\1***"),
)


def redact(text: str) -> str:
    """``text`` with bearer tokens (Authorization headers, ``token=`` query values) and
    cookies (the web pages' session) masked."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactingLogger(logging.LoggerAdapter):
    """Logger for the websockets library that masks tokens in its (debug) handshake logs."""

    def __init__(self, logger: logging.Logger):
        super().__init__(logger, {})

    def log(self, level, msg, *args, **kwargs):
        if self.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            kwargs.setdefault("stacklevel", 2)
            self.logger.log(level, "%s", redact(text), **kwargs)
