"""The shared gallery backend: PostgreSQL, for several servers on several machines.

Selected by a ``postgresql://`` URL as the gallery location, e.g.
``postgresql://facerec@db-host/facerec`` (libpq URL syntax; a Unix socket folder goes in
``?host=/run/postgresql``; keep passwords in ``~/.pgpass`` or ``PGPASSFILE`` rather than in the
URL: users only ever see the URL without its password). Design points:

* **Same tables and statements as SQLite** (:mod:`.sql`), in their own schema ``facerec``,
  created on first use in one transaction under an advisory lock (several servers may start
  at once); an older schema version is migrated there, in the same transaction. A database
  whose ``facerec`` schema is not a facerec gallery, or holds another
  schema version, is refused and left untouched.
* **Every change is one transaction**: it starts by incrementing ``meta.generation``, whose
  row lock serialises writers (so the check against other people's samples sees every
  earlier enrollment, as with SQLite's single writer), and ends with ``pg_notify``. A client
  killed mid-transaction loses its connection and PostgreSQL rolls the transaction back;
  a committed one is durable.
* **Changes are pushed**: :class:`NotifyWatch` LISTENs on its own connection and reloads the
  reader as soon as any process commits (the payload is the new change token).
* **Connection loss**: operations fail at once with :class:`GalleryUnavailable`, whose message
  says whether anything was written; reconnection is automatic, with back-off from
  ``BACKOFF_MIN`` doubling to ``BACKOFF_MAX`` seconds. The watch's thread reconnects the same
  way and reloads the reader when it is back (notifications sent meanwhile are lost).
  A silently dead link (no FIN, no RST) is noticed by TCP keepalives within about 20 s when
  idle, and fails a change after ``DEAD_LINK_TIMEOUT`` seconds (``tcp_user_timeout``).
"""
from __future__ import annotations

import functools
import logging
import threading
import time
import urllib.parse
from typing import Callable, List, Optional

import psycopg
import psycopg.conninfo

from . import sql
from .base import (FORMAT_NAME, SCHEMA_VERSION, ChangeWatch, Gallery, GalleryError,
                   GalleryUnavailable, check_generation, check_version, migrate_data)

BACKOFF_MIN = 0.5
BACKOFF_MAX = 5.0
#: Seconds to wait for a connection (libpq ``connect_timeout``) unless the URL sets it.
CONNECT_TIMEOUT = 5
#: Seconds a statement's data may stay unacknowledged by the database host before the
#: connection counts as lost (libpq ``tcp_user_timeout``): a change on a dead link fails
#: after this instead of after the kernel's retransmission limit (about 15 minutes).
DEAD_LINK_TIMEOUT = 10
_CONNECTION_DEFAULTS = {"connect_timeout": str(CONNECT_TIMEOUT), "application_name": "facerec",
                        "keepalives": "1", "keepalives_idle": "10",
                        "keepalives_interval": "3", "keepalives_count": "3",
                        "tcp_user_timeout": str(DEAD_LINK_TIMEOUT * 1000)}

log = logging.getLogger("facerec_server.gallery")


def redact(url: str) -> str:
    """``url`` without its password (in the user part or a ``password=`` query parameter)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        if ":" in user:
            netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = urllib.parse.urlencode(
        [(k, "***" if k == "password" else v)
         for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)], safe="/")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _reason(error: BaseException) -> str:
    """The first line of a driver error, for one-line messages."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


@functools.lru_cache(maxsize=256)  # the statements of sql.py: a few dozen
def _pg(statement: str) -> str:
    """A shared ``?`` statement in psycopg's ``%s`` style (no statement holds ``?`` or ``%``)."""
    return statement.replace("?", "%s")


class _Connection:
    """A psycopg connection with sqlite3's ``execute`` / ``executemany`` (``?`` placeholders)."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    def execute(self, statement: str, params=()):
        cursor = self.conn.cursor(binary=True)
        cursor.execute(_pg(statement), params or None)
        return cursor

    def executemany(self, statement: str, rows):
        cursor = self.conn.cursor()
        cursor.executemany(_pg(statement), rows)
        return cursor


class PostgresGallery(Gallery):
    """The gallery in a PostgreSQL database (see the module docstring)."""

    _BEGIN_WRITE = "BEGIN"  # READ COMMITTED; the generation row lock serialises writers
    _BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
    _ERRORS = (psycopg.Error,)

    def __init__(self, url: str):
        super().__init__()
        self.url = str(url).strip()
        self.path = redact(self.url)
        self._conn: Optional[psycopg.Connection] = None
        self._closed = False
        self._delay = BACKOFF_MIN
        self._retry_at = 0.0
        self._last_error = ""
        self._watches: List["NotifyWatch"] = []
        try:
            conn = self.connect()
        except psycopg.Error as error:
            raise GalleryError(f"cannot connect to the gallery database {self.path}: "
                               f"{_reason(error)}") from error
        try:
            self._ensure_schema(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    # --- connections -------------------------------------------------------------------------
    def connect(self) -> psycopg.Connection:
        """A new autocommit connection with the gallery's schema on its search path."""
        try:
            params = psycopg.conninfo.conninfo_to_dict(self.url)
        except psycopg.Error as error:
            raise psycopg.ProgrammingError(f"invalid URL: {_reason(error)}") from error
        for key, value in _CONNECTION_DEFAULTS.items():
            params.setdefault(key, value)
        conn = psycopg.connect(autocommit=True, **params)
        try:
            conn.execute(sql.PG_SEARCH_PATH)
        except BaseException:
            conn.close()
            raise
        return conn

    def _ensure_schema(self, conn: psycopg.Connection) -> None:
        """Check the ``facerec`` schema, or create it (one transaction, advisory lock)."""
        db = _Connection(conn)
        where = f"the gallery database {self.path}"
        try:
            db.execute("BEGIN")
            db.execute(sql.PG_CREATION_LOCK)
            if db.execute(sql.PG_NAMESPACE_EXISTS, (sql.POSTGRES_NAMESPACE,)).fetchone():
                if not db.execute(sql.PG_META_EXISTS).fetchone()[0]:
                    raise GalleryError(
                        f"{where} has a schema '{sql.POSTGRES_NAMESPACE}' that is not a facerec "
                        "gallery (no meta table); it was left untouched. Use another database")
                row = db.execute(sql.META_VALUE, ("format",)).fetchone()
                if row is None or row[0] != FORMAT_NAME:
                    raise GalleryError(f"{where} is not a facerec gallery (no format row); "
                                       "it was left untouched. Use another database")
                row = db.execute(sql.META_VALUE, ("schema_version",)).fetchone()
                try:
                    version = int(row[0]) if row else 0
                except ValueError:
                    raise GalleryError(f"{where} has a schema_version that is not an integer "
                                       f"({row[0]!r}); it was left untouched. Use another "
                                       "database") from None
                check_version(where, version)
                check_generation(where, db.execute(sql.GENERATION).fetchone())
                for step in range(version + 1, SCHEMA_VERSION + 1):  # migrate, same transaction
                    for statement in sql.POSTGRES_MIGRATIONS[step]:
                        db.execute(statement)
                    migrate_data(db, step)
                if version < SCHEMA_VERSION:
                    db.execute(sql.PG_SET_SCHEMA_VERSION, (str(SCHEMA_VERSION),))
                    db.execute(sql.BUMP_GENERATION)
            else:
                for statement in sql.POSTGRES_SCHEMA:
                    db.execute(statement)
                db.executemany(sql.INSERT_META, [
                    ("format", FORMAT_NAME), ("schema_version", str(SCHEMA_VERSION)),
                    ("created_at", repr(time.time())), ("generation", "0")])
                for step in range(2, SCHEMA_VERSION + 1):
                    for statement in sql.POSTGRES_MIGRATIONS[step]:
                        db.execute(statement)
            db.execute("COMMIT")
        except BaseException as error:
            try:
                db.execute("ROLLBACK")
            except psycopg.Error:
                pass
            if isinstance(error, psycopg.Error):
                raise GalleryError(f"cannot set up {where}: {_reason(error)}") from error
            raise

    def _db(self) -> _Connection:
        if self._closed:
            raise GalleryError(f"gallery {self.path} is closed")
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return _Connection(conn)
        self._drop_connection()
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            raise GalleryUnavailable(
                f"the gallery database {self.path} is unreachable ({self._last_error}); "
                f"nothing was changed. facerec reconnects by itself (next try in {wait:.1f} s)")
        try:
            self._conn = self.connect()
        except psycopg.Error as error:
            self._failed(error)
            raise GalleryUnavailable(
                f"the gallery database {self.path} is unreachable ({self._last_error}); "
                "nothing was changed. facerec reconnects by itself (next try in "
                f"{self._retry_at - time.monotonic():.1f} s)") from error
        self._delay, self._retry_at = BACKOFF_MIN, 0.0
        return _Connection(self._conn)

    def _failed(self, error: BaseException) -> None:
        """Start (or lengthen) the back-off after a failed connection attempt."""
        self._last_error = _reason(error)
        self._retry_at = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, BACKOFF_MAX)

    def reachable(self) -> None:
        """The database answered another connection: reconnect on the next call."""
        self._delay, self._retry_at = BACKOFF_MIN, 0.0

    def _replace_stale(self, error: Exception) -> bool:
        if not isinstance(error, psycopg.OperationalError):
            return False
        self._drop_connection()
        self.reachable()  # try a new connection at once (it fails clearly if the server is down)
        return True

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def _error(self, error: Exception, action: str, committing: bool = False) -> GalleryError:
        conn = self._conn
        lost = isinstance(error, psycopg.OperationalError) or conn is None or conn.broken
        if not lost:
            return GalleryError(f"gallery {self.path}: cannot {action}: {_reason(error)}")
        self._last_error = _reason(error)
        self._drop_connection()  # the next call reconnects (with back-off if that fails)
        if committing:
            outcome = ("the connection was lost while committing: the change may or may not "
                       "have been written (check with list)")
        elif action == "read":
            outcome = "nothing was read"
        else:
            outcome = "nothing was written"
        return GalleryUnavailable(
            f"the gallery database {self.path} is unreachable ({self._last_error}); {outcome}. "
            "facerec reconnects by itself")

    def _announce(self, db) -> None:
        db.execute(sql.PG_NOTIFY)

    # --- change watch --------------------------------------------------------------------------
    def watch(self, on_change: Callable[[], None], min_interval: float = 0.5,
              clock=time.monotonic) -> ChangeWatch:
        """A :class:`NotifyWatch` (pushed; ``min_interval`` and ``clock`` are not used)."""
        if self._closed:
            raise GalleryError(f"gallery {self.path} is closed")
        watch = NotifyWatch(self, on_change)
        self._watches = [w for w in self._watches if not w.closed] + [watch]
        return watch

    def close(self) -> None:
        watches, self._watches = self._watches, []
        for watch in watches:
            watch.close()
        with self._lock:
            self._closed = True
            self._drop_connection()


class NotifyWatch(ChangeWatch):
    """LISTENs for the gallery's notifications on its own connection, in its own thread.

    Calls ``on_change()`` (from that thread) when a notification carries a change token other
    than the one last :meth:`loaded`, and after every (re)connection when the token differs
    (notifications sent while disconnected are lost). A failed ``on_change`` (GalleryError)
    is retried every ``BACKOFF_MIN`` seconds.
    """

    pushed = True

    def __init__(self, gallery: PostgresGallery, on_change: Callable[[], None]):
        self._gallery = gallery
        self._on_change = on_change
        self._token: Optional[int] = None
        self._pending = False
        self._connected = False
        self._ever_connected = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="facerec-gallery-listen",
                                        daemon=True)
        self._thread.start()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def loaded(self, token: int) -> None:
        self._token = token

    def _run(self) -> None:
        delay = BACKOFF_MIN
        while not self._stop.is_set():
            conn = None
            try:
                conn = self._gallery.connect()
                conn.execute(sql.PG_LISTEN)
                token = int(conn.execute(sql.GENERATION).fetchone()[0])
                if self._ever_connected and not self._connected:
                    log.warning("gallery database %s reachable again", self._gallery.path)
                self._connected = self._ever_connected = True
                delay = BACKOFF_MIN
                self._gallery.reachable()
                self._changed(token, catch_up=True)
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=BACKOFF_MIN, stop_after=1):
                        self._changed(int(note.payload))
                    if self._pending:
                        self._changed(None)
            except (psycopg.Error, ValueError) as error:
                if self._connected:
                    log.warning("gallery database %s: connection lost (%s); recognition "
                                "goes on with the gallery loaded, reconnecting",
                                self._gallery.path, _reason(error))
                self._connected = False
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except psycopg.Error:
                        pass
            self._stop.wait(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    def _changed(self, token: Optional[int], catch_up: bool = False) -> None:
        """Call on_change unless the reader already holds ``token`` (None: retry a failure)."""
        if token is not None and self._token is not None and not self._pending:
            if (token == self._token) if catch_up else (token <= self._token):
                return
        try:
            self._on_change()
            self._pending = False
        except GalleryError as error:
            if not self._pending:
                log.warning("gallery %s changed but could not be reloaded (%s); retrying",
                            self._gallery.path, error)
            self._pending = True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=CONNECT_TIMEOUT + 2)
        self._connected = False
