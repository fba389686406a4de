"""Known-people gallery: 128-D face descriptors per person in one SQLite file.

The gallery is shared by the server node (several threads) and the ``facerec-enroll`` CLI
(other processes). Design points:

* **One file, WAL mode.** Readers in any process never block the single writer and vice
  versa; ``busy_timeout`` makes a second writer wait instead of failing.
* **Every change is one transaction** (``BEGIN IMMEDIATE`` ... ``COMMIT``). A process killed
  with SIGKILL at any moment leaves a file that opens with every committed change intact:
  SQLite rolls back the unfinished transaction on the next open.
* **synchronous=FULL.** In WAL mode ``NORMAL`` already survives a process kill (committed
  frames are in the OS page cache) but may lose the last transactions on power loss, which
  happens on battery robots. Writes are rare here (enrollment), so one fsync per commit
  costs nothing that matters.
* **Identified and versioned.** New files carry ``PRAGMA application_id`` = ``APPLICATION_ID``
  and ``PRAGMA user_version`` = ``SCHEMA_VERSION`` (plus a ``meta`` row ``format``). A foreign
  SQLite file, a non-SQLite file or another schema version raises :class:`GalleryError`;
  such a file is only read (its header), never written. New files are built under a
  temporary name and linked into place, so a crash during creation never leaves a
  half-initialised gallery at ``path``.
* **Change token.** ``meta.generation`` is incremented in every write transaction; reading
  it is one indexed row, cheap enough to poll per frame (see :class:`GalleryMatcherSync`).

Descriptors are float32 arrays of shape (128,), stored little-endian (512-byte blobs);
distances are Euclidean. Names are 1..64 characters with no control characters and no
leading/trailing white space (see :func:`validate_name`); they are compared exactly.
"""
from __future__ import annotations

import math
import os
import sqlite3
import struct
import threading
import time
import unicodedata
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

#: ``PRAGMA application_id`` of a facerec gallery ('FRGL').
APPLICATION_ID = 0x4652474C
#: Schema version stored in ``PRAGMA user_version``; bump on any schema change.
SCHEMA_VERSION = 1
FORMAT_NAME = "facerec-gallery"
DESCRIPTOR_SIZE = 128
MAX_NAME_LENGTH = 64
DEFAULT_PATH = os.path.join("~", ".ros", "facerec", "gallery.db")
#: Seconds a connection waits for another process's write lock before failing.
DEFAULT_BUSY_TIMEOUT = 10.0
#: Default distance below which two descriptors are the same person (dlib's 0.6).
DEFAULT_THRESHOLD = 0.6

_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = (
    """CREATE TABLE people (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL)""",
    """CREATE TABLE samples (
        id INTEGER PRIMARY KEY,
        person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
        descriptor BLOB NOT NULL CHECK (length(descriptor) = 512),
        created_at REAL NOT NULL,
        source TEXT NOT NULL DEFAULT '',
        score REAL,
        chip BLOB)""",
    "CREATE INDEX samples_person ON samples(person_id)",
    "CREATE INDEX samples_source ON samples(source)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class GalleryError(RuntimeError):
    """The gallery file cannot be used (foreign, corrupt, other schema version, I/O)."""


class EnrollmentError(ValueError):
    """A request to change the gallery was refused; nothing was written."""


class ConflictError(EnrollmentError):
    """A new descriptor matches a *different* person already in the gallery.

    ``index`` is the position of the offending sample in the request, ``other`` the
    person it matches and ``distance`` the Euclidean distance to that person's nearest sample.
    """

    def __init__(self, message: str, index: int, other: str, distance: float):
        super().__init__(message)
        self.index = index
        self.other = other
        self.distance = distance


@dataclass
class Sample:
    """One sample to store: a descriptor plus optional provenance.

    ``descriptor``: (128,) float32 (any float array of 128 finite values is accepted).
    ``score``: detector score of the face (``None`` if unknown).
    ``chip``: optional encoded image (JPEG bytes) of the aligned face chip.
    ``source``: provenance of this sample; ``None`` = the ``source`` given to add_samples.
    """

    descriptor: np.ndarray
    score: Optional[float] = None
    chip: Optional[bytes] = None
    source: Optional[str] = None


def validate_name(name) -> str:
    """Return ``name`` if it is a valid person name, else raise :class:`EnrollmentError`.

    Valid: a ``str`` of 1..64 characters, no control/format characters (Unicode categories
    Cc, Cf, Zl, Zp: newlines, tabs, NUL, bidi overrides...), no leading or trailing white space.
    """
    if not isinstance(name, str):
        raise EnrollmentError(f"name must be a string, got {type(name).__name__}")
    if not name or not name.strip():
        raise EnrollmentError("name is empty: give the person's name (1..64 characters)")
    if len(name) > MAX_NAME_LENGTH:
        raise EnrollmentError(
            f"name is {len(name)} characters long; at most {MAX_NAME_LENGTH} are allowed")
    for position, char in enumerate(name):
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            raise EnrollmentError(
                f"name contains a control character (U+{ord(char):04X} at position "
                f"{position}); use printable characters only")
    if name != name.strip():
        raise EnrollmentError(f"name {name!r} has leading or trailing white space")
    return name


def _descriptor_blob(descriptor) -> bytes:
    array = np.asarray(descriptor, dtype=np.float64).reshape(-1)
    if array.shape != (DESCRIPTOR_SIZE,):
        raise EnrollmentError(
            f"a descriptor must have {DESCRIPTOR_SIZE} values, got {array.size}")
    if not np.all(np.isfinite(array)):
        raise EnrollmentError("a descriptor holds NaN or infinite values")
    return array.astype("<f4").tobytes()


def _as_sample(item) -> Sample:
    """Accept a :class:`Sample`, a bare descriptor, or a pipeline FaceSample-like object."""
    if isinstance(item, Sample):
        return item
    if isinstance(item, np.ndarray) or isinstance(item, (list, tuple)):
        return Sample(descriptor=np.asarray(item))
    descriptor = getattr(item, "descriptor", None)
    if descriptor is None:
        raise EnrollmentError(f"cannot store {type(item).__name__}: it has no descriptor")
    score = getattr(item, "score", None)
    detection = getattr(item, "detection", None)
    if score is None and detection is not None:
        score = getattr(detection, "score", None)
    chip = getattr(item, "chip_jpeg", None)
    return Sample(descriptor=descriptor, score=score, chip=chip)


def default_path() -> str:
    """``~/.ros/facerec/gallery.db`` with ``~`` expanded."""
    return os.path.expanduser(DEFAULT_PATH)


def _read_header(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(100)
    except OSError as error:
        raise GalleryError(f"cannot read gallery file {path}: {error}") from error


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
    _check_version(path, version)


def _check_version(path: str, version: int) -> None:
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise GalleryError(
            f"{path} has gallery schema version {version}, newer than this facerec "
            f"understands ({SCHEMA_VERSION}); upgrade facerec. The file was left untouched")
    raise GalleryError(
        f"{path} has gallery schema version {version}, older than this facerec's "
        f"({SCHEMA_VERSION}) and no migration exists; re-enroll into a new gallery. "
        "The file was left untouched")


class Gallery:
    """Known people and their descriptor samples in an SQLite file (see module docstring).

    Thread-safe: one connection guarded by a lock. Process-safe: SQLite WAL locking.
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: Optional[str] = None, busy_timeout: float = DEFAULT_BUSY_TIMEOUT):
        self.path = os.path.abspath(os.path.expanduser(path or DEFAULT_PATH))
        self._busy_timeout = float(busy_timeout)
        self._lock = threading.RLock()
        self._conn: Optional[sqlite3.Connection] = None
        if not os.path.exists(self.path):
            self._create()
        _check_header(self.path, _read_header(self.path))
        conn = self._connect(self.path)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            _check_version(self.path, version)
            row = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is None or row[0] != FORMAT_NAME:
                raise GalleryError(f"{self.path} is not a facerec gallery (no format row)")
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() != "wal":
                raise GalleryError(f"{self.path} is not in WAL mode ({mode})")
        except sqlite3.DatabaseError as error:
            conn.close()
            raise GalleryError(f"cannot read gallery {self.path}: {error}") from error
        except GalleryError:
            conn.close()
            raise
        self._conn = conn

    # --- opening -------------------------------------------------------------------------
    def _connect(self, path: str) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(path, timeout=self._busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as error:
            raise GalleryError(f"cannot open gallery {path}: {error}") from error
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
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                    ("format", FORMAT_NAME), ("created_at", repr(time.time())),
                    ("generation", "0")])
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

    # --- plumbing --------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise GalleryError(f"gallery {self.path} is closed")
        return self._conn

    def _write(self, body):
        """Run ``body(conn)`` in one BEGIN IMMEDIATE transaction that bumps the generation."""
        with self._lock:
            conn = self._db()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise GalleryError(f"gallery {self.path} is busy or unwritable: {error}") \
                    from error
            try:
                result = body(conn)
                conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 "
                             "WHERE key = 'generation'")
                conn.execute("COMMIT")
            except BaseException as error:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the failed statement already ended the transaction
                if isinstance(error, sqlite3.Error):
                    raise GalleryError(f"gallery {self.path}: {error}") from error
                raise
            return result

    def _read(self, body):
        """Run ``body(conn)`` in one read transaction (a consistent snapshot)."""
        with self._lock:
            conn = self._db()
            try:
                conn.execute("BEGIN")
                try:
                    return body(conn)
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as error:
                raise GalleryError(f"gallery {self.path}: {error}") from error

    # --- changes -------------------------------------------------------------------------
    def add_samples(self, name: str, samples: Iterable, source: str = "", force: bool = False,
                    threshold: float = DEFAULT_THRESHOLD,
                    replace_source_prefix: Optional[str] = None) -> int:
        """Add ``samples`` for ``name`` in one transaction; return how many were added.

        ``samples``: :class:`Sample` objects, bare (128,) descriptors, or objects with a
        ``descriptor`` attribute (and optionally ``detection.score`` / ``chip_jpeg``).
        ``source``: provenance string stored with each sample (e.g. ``cli:photo.jpg``).

        Unless ``force``, a sample whose distance to some *other* person's sample is below
        ``threshold`` raises :class:`ConflictError`. ``replace_source_prefix``: samples
        (of any person) whose source starts with it are deleted in the same transaction
        before the check and the insert (used to re-import a changed reference photo).

        Raises :class:`EnrollmentError` (a ``ValueError``) for an invalid name, no samples or
        a malformed descriptor; nothing is written then.
        """
        validate_name(name)
        source = str(source)
        rows = []
        for item in samples:
            sample = _as_sample(item)
            score = None if sample.score is None else float(sample.score)
            chip = None if sample.chip is None else bytes(sample.chip)
            own = source if sample.source is None else str(sample.source)
            rows.append((_descriptor_blob(sample.descriptor), score, chip, own))
        if not rows:
            raise EnrollmentError(f"no samples to add for {name!r}")

        def body(conn):
            if replace_source_prefix:
                conn.execute("DELETE FROM samples WHERE substr(source, 1, ?) = ?",
                             (len(replace_source_prefix), replace_source_prefix))
            if not force:
                self._check_conflicts(conn, name, rows, threshold)
            now = time.time()
            conn.execute("INSERT OR IGNORE INTO people (name, created_at) VALUES (?, ?)",
                         (name, now))
            person_id = conn.execute("SELECT id FROM people WHERE name = ?",
                                     (name,)).fetchone()[0]
            conn.executemany(
                "INSERT INTO samples (person_id, descriptor, created_at, source, score, chip) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(person_id, blob, now, own, score, chip) for blob, score, chip, own in rows])
            if replace_source_prefix:
                conn.execute("DELETE FROM people WHERE id NOT IN "
                             "(SELECT DISTINCT person_id FROM samples)")
            return len(rows)
        return self._write(body)

    @staticmethod
    def _check_conflicts(conn, name, rows, threshold) -> None:
        others = conn.execute(
            "SELECT p.name, s.descriptor FROM samples s JOIN people p ON p.id = s.person_id "
            "WHERE p.name != ?", (name,)).fetchall()
        if not others:
            return
        names = [row[0] for row in others]
        matrix = np.frombuffer(b"".join(row[1] for row in others), dtype="<f4")
        matrix = matrix.reshape(-1, DESCRIPTOR_SIZE).astype(np.float32)
        for index, (blob, _, _, _) in enumerate(rows):
            descriptor = np.frombuffer(blob, dtype="<f4").astype(np.float32)
            distances = np.linalg.norm(matrix - descriptor, axis=1)
            best = int(np.argmin(distances))
            if distances[best] < threshold:
                raise ConflictError(
                    f"sample {index + 1} looks like {names[best]!r} (distance "
                    f"{distances[best]:.3f} < threshold {threshold:.2f}); refusing to enroll "
                    f"it as {name!r}. Use force to enroll anyway", index, names[best],
                    float(distances[best]))

    def forget(self, name: str) -> int:
        """Remove ``name`` and all its samples; return the number of samples removed.

        An unknown name is not an error: it returns 0 and changes nothing (the change
        token is still bumped). Invalid names raise :class:`EnrollmentError`.
        """
        validate_name(name)

        def body(conn):
            row = conn.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
            if row is None:
                return 0
            removed = conn.execute("DELETE FROM samples WHERE person_id = ?",
                                   (row[0],)).rowcount
            conn.execute("DELETE FROM people WHERE id = ?", (row[0],))
            return removed
        return self._write(body)

    def remove_source(self, source_prefix: str) -> int:
        """Delete every sample whose source starts with ``source_prefix``; return the count.

        People left without samples are removed too.
        """
        if not source_prefix:
            raise EnrollmentError("empty source prefix would remove every sample")

        def body(conn):
            removed = conn.execute("DELETE FROM samples WHERE substr(source, 1, ?) = ?",
                                   (len(source_prefix), source_prefix)).rowcount
            conn.execute("DELETE FROM people WHERE id NOT IN "
                         "(SELECT DISTINCT person_id FROM samples)")
            return removed
        return self._write(body)

    # --- queries ---------------------------------------------------------------------------
    def people(self) -> List[Tuple[str, int]]:
        """``[(name, sample_count), ...]`` sorted by name (code point order)."""
        return self._read(lambda conn: [tuple(row) for row in conn.execute(
            "SELECT p.name, COUNT(s.id) FROM people p LEFT JOIN samples s "
            "ON s.person_id = p.id GROUP BY p.id ORDER BY p.name")])

    def count(self, name: Optional[str] = None) -> int:
        """Number of samples of ``name`` (0 if unknown), or of the whole gallery."""
        if name is None:
            return self._read(lambda conn: conn.execute(
                "SELECT COUNT(*) FROM samples").fetchone()[0])
        return self._read(lambda conn: conn.execute(
            "SELECT COUNT(*) FROM samples s JOIN people p ON p.id = s.person_id "
            "WHERE p.name = ?", (name,)).fetchone()[0])

    def sources(self, prefix: str = "") -> dict:
        """``{source: (name, sample_count)}`` for sources starting with ``prefix``."""
        def body(conn):
            rows = conn.execute(
                "SELECT s.source, p.name, COUNT(*) FROM samples s JOIN people p "
                "ON p.id = s.person_id WHERE substr(s.source, 1, ?) = ? "
                "GROUP BY s.source, p.name", (len(prefix), prefix)).fetchall()
            return {source: (name, count) for source, name, count in rows}
        return self._read(body)

    @staticmethod
    def _matrix(conn) -> Tuple[List[str], np.ndarray]:
        rows = conn.execute("SELECT p.name, s.descriptor FROM samples s JOIN people p "
                            "ON p.id = s.person_id ORDER BY s.id").fetchall()
        names = [row[0] for row in rows]
        if not rows:
            return names, np.zeros((0, DESCRIPTOR_SIZE), dtype=np.float32)
        matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype="<f4")
        return names, matrix.reshape(-1, DESCRIPTOR_SIZE).astype(np.float32)

    def matrix(self) -> Tuple[List[str], np.ndarray]:
        """``(row_names, descriptors)``: one row per sample, descriptors (N, 128) float32."""
        return self._read(self._matrix)

    def snapshot(self) -> Tuple[int, List[str], np.ndarray]:
        """``(change_token, row_names, descriptors)`` read in one consistent transaction."""
        return self._read(lambda conn: (self._token(conn),) + self._matrix(conn))

    @staticmethod
    def _token(conn) -> int:
        return int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    def change_token(self) -> int:
        """A number that changes after every committed change by any process (one row read)."""
        return self._read(self._token)

    def export(self, descriptors: bool = True) -> dict:
        """The whole gallery as a JSON-serialisable dict (chips are not exported).

        ``{"format", "schema_version", "exported_at", "people": [{"name", "created_at",
        "samples": [{"id", "created_at", "source", "score", "descriptor"?}]}]}`` with
        descriptors as lists of 128 floats when ``descriptors`` is true; times are Unix seconds.
        """
        def body(conn):
            people = []
            for person_id, name, created in conn.execute(
                    "SELECT id, name, created_at FROM people ORDER BY name").fetchall():
                samples = []
                for sample_id, blob, sample_created, source, score in conn.execute(
                        "SELECT id, descriptor, created_at, source, score FROM samples "
                        "WHERE person_id = ? ORDER BY id", (person_id,)):
                    entry = {"id": sample_id, "created_at": sample_created, "source": source,
                             "score": None if score is None or not math.isfinite(score)
                             else score}
                    if descriptors:
                        entry["descriptor"] = [
                            float(v) for v in np.frombuffer(blob, dtype="<f4")]
                    samples.append(entry)
                people.append({"name": name, "created_at": created, "samples": samples})
            return {"format": FORMAT_NAME, "schema_version": SCHEMA_VERSION,
                    "exported_at": time.time(), "path": self.path, "people": people}
        return self._read(body)

    def chips(self, name: str) -> List[bytes]:
        """Stored aligned-chip images (JPEG bytes) of ``name``'s samples that have one."""
        return self._read(lambda conn: [row[0] for row in conn.execute(
            "SELECT s.chip FROM samples s JOIN people p ON p.id = s.person_id "
            "WHERE p.name = ? AND s.chip IS NOT NULL ORDER BY s.id", (name,))])

    # --- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class GalleryMatcherSync:
    """Keeps a matcher's gallery matrix equal to the gallery file's content.

    ``matcher`` needs ``set_gallery(names, descriptors)`` (core.match.Matcher). Call
    :meth:`refresh` often (e.g. once per frame): it costs one small query at most every
    ``min_interval`` seconds and reloads the matrix only when any process changed the file.
    """

    def __init__(self, gallery: Gallery, matcher, min_interval: float = 0.5,
                 clock=time.monotonic):
        self.gallery = gallery
        self.matcher = matcher
        self.min_interval = float(min_interval)
        self._clock = clock
        self._token: Optional[int] = None
        self._checked = -math.inf
        self._lock = threading.Lock()

    def refresh(self, force: bool = False) -> bool:
        """Reload the matcher if the gallery changed; return True when it reloaded."""
        with self._lock:
            now = self._clock()
            if not force and now - self._checked < self.min_interval:
                return False
            self._checked = now
            if not force and self._token is not None \
                    and self.gallery.change_token() == self._token:
                return False
            token, names, descriptors = self.gallery.snapshot()
            self.matcher.set_gallery(names, descriptors)
            self._token = token
            return True


def descriptors_of(items: Sequence) -> np.ndarray:
    """Stack the descriptors of ``items`` (samples or arrays) into an (N, 128) float32 array."""
    if not items:
        return np.zeros((0, DESCRIPTOR_SIZE), dtype=np.float32)
    return np.stack([np.asarray(_as_sample(item).descriptor, dtype=np.float32).reshape(-1)
                     for item in items])
