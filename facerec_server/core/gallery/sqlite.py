"""The embedded gallery backend: one SQLite file (the default; no server needed).

The file is shared by the server node (several threads) and the ``facerec-enroll`` CLI
(other processes on the same machine). Design points:

* **One file, WAL mode.** Readers in any process never block the single writer and vice
  versa; ``busy_timeout`` makes a second writer wait instead of failing.
* **Every change is one transaction** (``BEGIN IMMEDIATE`` ... ``COMMIT``). A process killed
  with SIGKILL at any moment leaves a file that opens with every committed change intact:
  SQLite rolls back the unfinished transaction on the next open.
* **synchronous=FULL.** In WAL mode ``NORMAL`` already survives a process kill (committed
  frames are in the OS page cache) but may lose the last transactions on power loss, which
  happens on battery robots. Writes are rare here (enrollment), so one fsync per commit
  costs nothing that matters.
* **Migrated when opened.** A gallery of an older schema version (1: before anonymous
  identities) is brought to ``SCHEMA_VERSION`` in one transaction when it is opened.
* **Identified and versioned.** New files carry ``PRAGMA application_id`` = ``APPLICATION_ID``
  and ``PRAGMA user_version`` = ``SCHEMA_VERSION`` (plus a ``meta`` row ``format``). A foreign
  SQLite file, a non-SQLite file or another schema version raises :class:`GalleryError`;
  such a file is only read (its header), never written. New files are built under a
  temporary name and linked into place, so a crash during creation never leaves a
  half-initialised gallery at ``path``.
* **Change watch: the token, polled.** ``meta.generation`` is incremented in every write
  transaction; reading it is one indexed row, cheap enough to poll per frame
  (:class:`~facerec_server.core.gallery.base.TokenWatch`).
"""
from __future__ import annotations

import os
import sqlite3
import struct
import threading
import time
from typing import Optional

from .. import files
from . import sql
from .base import (DEFAULT_PATH, FORMAT_NAME, SCHEMA_VERSION, Gallery, GalleryError,
                   check_generation, check_version, migrate_data)

#: ``PRAGMA application_id`` of a facerec gallery ('FRGL').
APPLICATION_ID = 0x4652474C
#: Seconds a connection waits for another process's write lock before failing.
DEFAULT_BUSY_TIMEOUT = 10.0

_SQLITE_MAGIC = b"SQLite format 3\x00"


def _read_header(path: str) -> bytes:
    """The first 100 bytes, if ``path`` is a regular file (a FIFO would hang the reader)."""
    try:
        return files.read_head(path, "gallery file", 100)
    except files.UnusableFile as error:
        raise GalleryError(f"{error}; choose another gallery path") from None


def _check_header(path: str, header: bytes) -> None:
    """Raise GalleryError unless ``header`` (first 100 bytes) is a facerec gallery's."""
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise GalleryError(
            f"{path} is not a facerec gallery (not an SQLite database); it was left "
            "untouched. Move it away or choose another gallery path")
    application_id, = struct.unpack(">i", header[68:72])
    if application_id & 0xFFFFFFFF != APPLICATION_ID:
        raise GalleryError(
            f"{path} is an SQLite database but not a facerec gallery (application_id "
            f"0x{application_id & 0xFFFFFFFF:08X}); it was left untouched. "
            "Choose another gallery path")
    # user_version from the header too, so a file of another version is refused before any
    # connection exists (the PRAGMA is checked again once open, in case a WAL holds a newer one)
    version, = struct.unpack(">i", header[60:64])
    check_version(path, version)


def _text(error: Exception) -> str:
    """What went wrong, in one line (see SQLiteGallery._ERRORS for UnicodeDecodeError)."""
    if isinstance(error, UnicodeDecodeError):
        return ("the file is damaged (SQLite reported an error about bytes that are not "
                "text, e.g. a malformed schema); restore it from a backup or an export")
    return " ".join(str(error).split())


class SQLiteGallery(Gallery):
    """The gallery in an SQLite file (see the module docstring)."""

    _BEGIN_WRITE = "BEGIN IMMEDIATE"
    _BEGIN_READ = "BEGIN"
    #: UnicodeDecodeError: Python's sqlite3 decodes SQLite's error text as UTF-8, and a
    #: damaged schema page puts its raw bytes into that text ("malformed database schema")
    _ERRORS = (sqlite3.Error, UnicodeDecodeError)

    def __init__(self, path: Optional[str] = None, busy_timeout: float = DEFAULT_BUSY_TIMEOUT):
        super().__init__()
        try:
            self.path = os.path.abspath(files.expand_user(path or DEFAULT_PATH, "gallery path"))
        except files.UnusableFile as error:
            raise GalleryError(str(error)) from None
        self._busy_timeout = float(busy_timeout)
        self._conn: Optional[sqlite3.Connection] = None
        if not os.path.lexists(self.path):
            self._create()
        _check_header(self.path, _read_header(self.path))
        conn = self._connect(self.path)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            check_version(self.path, version)
            if version < SCHEMA_VERSION:
                self._migrate(conn)
            row = conn.execute(sql.META_VALUE, ("format",)).fetchone()
            if row is None or row[0] != FORMAT_NAME:
                raise GalleryError(f"{self.path} is not a facerec gallery (no format row)")
            check_generation(self.path, conn.execute(sql.GENERATION).fetchone())
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() != "wal":
                raise GalleryError(f"{self.path} is not in WAL mode ({mode})")
        except (sqlite3.DatabaseError, UnicodeDecodeError) as error:
            conn.close()
            raise GalleryError(f"cannot read gallery {self.path}: {_text(error)}") from error
        except GalleryError:
            conn.close()
            raise
        self._conn = conn

    # --- opening -----------------------------------------------------------------------------
    def _connect(self, path: str) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(path, timeout=self._busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except (sqlite3.Error, UnicodeDecodeError) as error:
            raise GalleryError(f"cannot open gallery {path}: {_text(error)}") from error
        return conn

    def _create(self) -> None:
        """Build a new gallery under a temporary name, then link it into place atomically."""
        folder = os.path.dirname(self.path)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            raise GalleryError(f"cannot create gallery folder {folder}: {error}") from error
        temp = f"{self.path}.new-{os.getpid()}-{threading.get_ident()}"
        for leftover in (temp, temp + "-wal", temp + "-shm", temp + "-journal"):
            if os.path.exists(leftover):
                os.unlink(leftover)
        try:
            conn = self._connect(temp)
            try:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("BEGIN IMMEDIATE")
                for statement in sql.SQLITE_SCHEMA:
                    conn.execute(statement)
                conn.executemany(sql.INSERT_META, [
                    ("format", FORMAT_NAME), ("created_at", repr(time.time())),
                    ("generation", "0")])
                for version in range(2, SCHEMA_VERSION + 1):
                    for statement in sql.SQLITE_MIGRATIONS[version]:
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
            try:
                os.link(temp, self.path)  # fails if another process created it meanwhile
            except FileExistsError:
                pass
            except OSError:  # file systems without hard links
                if not os.path.exists(self.path):
                    os.rename(temp, self.path)
        except (OSError, sqlite3.Error) as error:
            raise GalleryError(f"cannot create gallery {self.path}: {error}") from error
        finally:
            for leftover in (temp, temp + "-wal", temp + "-shm"):
                if os.path.exists(leftover):
                    os.unlink(leftover)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring an older gallery to ``SCHEMA_VERSION`` in one transaction (nothing is lost;
        a crash leaves the old version, which migrates on the next open)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process
            for step in range(version + 1, SCHEMA_VERSION + 1):           # may have done it
                for statement in sql.SQLITE_MIGRATIONS[step]:
                    conn.execute(statement)
                migrate_data(conn, step)
            if version < SCHEMA_VERSION:
                conn.execute(sql.BUMP_GENERATION)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # --- the backend hooks ----------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise GalleryError(f"gallery {self.path} is closed")
        return self._conn

    def _error(self, error: Exception, action: str, committing: bool = False) -> GalleryError:
        if action.startswith("start a change"):
            return GalleryError(f"gallery {self.path} is busy or unwritable: {_text(error)}")
        return GalleryError(f"gallery {self.path}: {_text(error)}")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
