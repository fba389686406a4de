"""The gallery API shared by every backend: errors, samples, names, and all operations.

A gallery holds known people and their descriptor samples. :class:`Gallery` is the one API
the rest of facerec uses (core.enroll, core.reference, the ``facerec-enroll`` CLI, the
nodes and :class:`~facerec_server.core.gallery.sync.GalleryMatcherSync`). ``Gallery(location)``
opens the backend the location names (see :func:`backend_class`):

* a file path: :class:`~facerec_server.core.gallery.sqlite.SQLiteGallery` (the embedded
  default, one machine);
* a ``postgresql://`` URL: :class:`~facerec_server.core.gallery.postgres.PostgresGallery`
  (several servers on several machines share one gallery).

Every operation is written once here, as a function of a database connection, with the SQL
of :mod:`.sql`; a backend supplies connections, transactions, error translation and a
change watch (:meth:`Gallery.watch`). Design points common to both backends:

* **Every change is one transaction** that first increments ``meta.generation`` (the change
  token). A process killed at any moment leaves every committed change and no part of an
  uncommitted one.
* **Readers see whole transactions**: each query (and :meth:`Gallery.snapshot`) runs in one
  read transaction.
* **Change watch**: :meth:`Gallery.watch` tells a reader when any process committed a
  change: by polling the token (SQLite) or pushed by the server (PostgreSQL LISTEN/NOTIFY).

Descriptors are float32 arrays of shape (128,), stored little-endian (512-byte blobs);
distances are Euclidean. Names are 1..64 characters with no control characters and no
leading/trailing white space (see :func:`validate_name`); they are compared exactly.

Rows another program wrote that a matcher cannot use (a descriptor with NaN or infinite
values or of the wrong size, a person with an empty name) are left out of :meth:`matrix`
and :meth:`snapshot` with one warning per change on the ``facerec_server.gallery`` logger,
naming the gallery; recognition goes on with the other samples. A ``generation`` row that
is missing or not an integer makes the gallery unusable: opening it raises GalleryError.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
import unicodedata
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from . import sql

#: Schema version (SQLite: ``PRAGMA user_version``; PostgreSQL: ``meta.schema_version``);
#: bump on any schema change.
SCHEMA_VERSION = 1
FORMAT_NAME = "facerec-gallery"
DESCRIPTOR_SIZE = 128
MAX_NAME_LENGTH = 64
DEFAULT_PATH = os.path.join("~", ".ros", "facerec", "gallery.db")
#: Default distance below which two descriptors are the same person (dlib's 0.6).
DEFAULT_THRESHOLD = 0.6
#: URL schemes that select the PostgreSQL backend.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")

log = logging.getLogger("facerec_server.gallery")


class GalleryError(RuntimeError):
    """The gallery cannot be used (foreign, corrupt, other schema version, I/O, closed)."""


class GalleryUnavailable(GalleryError):
    """The gallery's database server cannot be reached right now (a passing condition).

    Raised by the PostgreSQL backend while the connection is lost; the message says whether
    the change was written. Readers keep the gallery they already loaded meanwhile.
    """


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


def descriptors_of(items: Sequence) -> np.ndarray:
    """Stack the descriptors of ``items`` (samples or arrays) into an (N, 128) float32 array."""
    if not items:
        return np.zeros((0, DESCRIPTOR_SIZE), dtype=np.float32)
    return np.stack([np.asarray(_as_sample(item).descriptor, dtype=np.float32).reshape(-1)
                     for item in items])


def _matrix_of(rows) -> Tuple[List[str], np.ndarray, List[str]]:
    """(names, (N, 128) float32, problems) from (name, blob) rows. Rows a matcher cannot
    use are left out; ``problems`` says which (one short text per kind of problem)."""
    names: List[str] = []
    blobs: List[bytes] = []
    bad: dict = {}
    for name, blob in rows:
        blob = bytes(blob)
        if len(blob) != DESCRIPTOR_SIZE * 4:
            bad.setdefault(f"a descriptor of {len(blob)} bytes instead of "
                           f"{DESCRIPTOR_SIZE * 4}", []).append(name)
        elif not isinstance(name, str) or not name:
            bad.setdefault("an empty name", []).append(name)
        elif not np.isfinite(np.frombuffer(blob, dtype="<f4")).all():
            bad.setdefault("NaN or infinite descriptor values", []).append(name)
        else:
            names.append(name)
            blobs.append(blob)
    problems = [f"{len(who)} with {what} ({', '.join(sorted({repr(n) for n in who}))})"
                for what, who in bad.items()]
    if not blobs:
        return names, np.zeros((0, DESCRIPTOR_SIZE), dtype=np.float32), problems
    matrix = np.frombuffer(b"".join(blobs), dtype="<f4")
    return names, matrix.reshape(-1, DESCRIPTOR_SIZE).astype(np.float32), problems


def check_generation(where: str, row) -> int:
    """The change token from the meta table's ``generation`` row; GalleryError (one line,
    naming ``where``) when it is missing or not an integer: another program changed the
    database, and changes could no longer be told apart."""
    if row is None:
        raise GalleryError(
            f"{where} has no 'generation' row in its meta table (it was changed by another "
            "program); it was left untouched. Restore it from a backup, or add the row with "
            "INSERT INTO meta (key, value) VALUES ('generation', '0')")
    try:
        value = int(str(row[0]).strip())
    except ValueError:
        value = None
    if value is None or not -2 ** 63 <= value < 2 ** 63 - 1:
        raise GalleryError(
            f"{where} has a 'generation' row that is not an integer ({row[0]!r}; it was "
            "changed by another program); it was left untouched. Set it with UPDATE meta "
            "SET value = '0' WHERE key = 'generation'")
    return value


def check_version(where: str, version: int) -> None:
    """Raise GalleryError unless ``version`` is this facerec's ``SCHEMA_VERSION``."""
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise GalleryError(
            f"{where} has gallery schema version {version}, newer than this facerec "
            f"understands ({SCHEMA_VERSION}); upgrade facerec. It was left untouched")
    raise GalleryError(
        f"{where} has gallery schema version {version}, older than this facerec's "
        f"({SCHEMA_VERSION}) and no migration exists; re-enroll into a new gallery. "
        "It was left untouched")


def is_postgres_url(location) -> bool:
    """True when ``location`` is a ``postgresql://`` (or ``postgres://``) URL."""
    return isinstance(location, str) and location.strip().lower().startswith(POSTGRES_SCHEMES)


def default_path() -> str:
    """``~/.ros/facerec/gallery.db`` with ``~`` expanded."""
    return os.path.expanduser(DEFAULT_PATH)


def backend_class(location) -> type:
    """The Gallery subclass for ``location``: PostgreSQL for a URL, SQLite otherwise."""
    if is_postgres_url(location):
        from .postgres import PostgresGallery  # psycopg is needed only here
        return PostgresGallery
    from .sqlite import SQLiteGallery
    return SQLiteGallery


class ChangeWatch:
    """Tells a reader when the gallery changed (any process); see :meth:`Gallery.watch`.

    ``on_change()`` is called when the gallery's change token differs from the one last
    passed to :meth:`loaded`. A *pushing* watch calls it from its own thread as soon as the
    database reports a commit; a polling one calls it from :meth:`poll`.
    """

    #: True when changes are pushed by the database (no polling needed).
    pushed = False

    def loaded(self, token: int) -> None:
        """Record the change token of the data the reader now holds."""

    def poll(self) -> None:
        """Check for a change now, if this watch polls (cheap; called e.g. once per frame)."""

    @property
    def connected(self) -> bool:
        """False while the watch cannot hear the database (pushed watches only)."""
        return True

    def close(self) -> None:
        """Stop watching (idempotent)."""


class TokenWatch(ChangeWatch):
    """Polls :meth:`Gallery.change_token` (one small query) at most every ``min_interval`` s."""

    def __init__(self, gallery: "Gallery", on_change: Callable[[], None],
                 min_interval: float = 0.5, clock=time.monotonic):
        self._gallery = gallery
        self._on_change = on_change
        self.min_interval = float(min_interval)
        self._clock = clock
        self._token: Optional[int] = None
        self._checked = -math.inf

    def loaded(self, token: int) -> None:
        self._token = token

    def poll(self) -> None:
        now = self._clock()
        if now - self._checked < self.min_interval:
            return
        self._checked = now
        if self._token is None or self._gallery.change_token() != self._token:
            self._on_change()


class Gallery:
    """Known people and their descriptor samples (see the module docstring).

    ``Gallery(location)`` returns the backend for ``location`` (a path or a
    ``postgresql://`` URL; None = ``~/.ros/facerec/gallery.db``), like ``pathlib.Path``
    returns a ``PosixPath``. Thread-safe: one connection guarded by a lock. Use as a context
    manager or call :meth:`close`.

    ``path`` is what to show users: the file path, or the URL without its password.
    """

    path: str = ""

    def __new__(cls, location=None, *args, **kwargs):
        if cls is Gallery:
            cls = backend_class(location)
        return super().__new__(cls)

    # --- what a backend provides ------------------------------------------------------------
    _BEGIN_WRITE = "BEGIN"
    _BEGIN_READ = "BEGIN"
    _ERRORS: Tuple[type, ...] = ()  # the driver's exception types

    def _db(self):
        """The open connection (``execute``, ``executemany``); raises GalleryError."""
        raise NotImplementedError

    def _error(self, error: Exception, action: str, committing: bool = False) -> GalleryError:
        """A GalleryError (with a message for users) for the driver's ``error``."""
        return GalleryError(f"gallery {self.path}: cannot {action}: {error}")

    def _announce(self, db) -> None:
        """Called inside each write transaction, after the change, before COMMIT."""

    def watch(self, on_change: Callable[[], None], min_interval: float = 0.5,
              clock=time.monotonic) -> ChangeWatch:
        """A :class:`ChangeWatch` calling ``on_change()`` after any process changed the gallery.

        ``min_interval`` and ``clock`` rate-limit a polling watch.
        """
        return TokenWatch(self, on_change, min_interval, clock)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        raise NotImplementedError

    def __init__(self):
        self._lock = threading.RLock()

    # --- transactions -------------------------------------------------------------------------
    def _write(self, body):
        """Run ``body(db)`` in one write transaction that bumps the change token first."""
        with self._lock:
            db = self._begin(self._BEGIN_WRITE, "start a change (nothing was written)")
            committing = False
            try:
                db.execute(sql.BUMP_GENERATION)
                result = body(db)
                self._announce(db)
                committing = True
                db.execute("COMMIT")
            except BaseException as error:
                self._rollback(db)
                if isinstance(error, self._ERRORS):
                    what = ("commit the change" if committing
                            else "write the change (nothing was written)")
                    raise self._error(error, what, committing) from error
                raise
            return result

    def _begin(self, statement: str, action: str):
        """The connection inside a new transaction. A connection the backend finds stale
        (e.g. closed by a database restart while idle) is replaced once: nothing was sent
        in a transaction on it yet."""
        for attempt in (1, 2):
            db = self._db()
            try:
                db.execute(statement)
                return db
            except self._ERRORS as error:
                if attempt == 2 or not self._replace_stale(error):
                    raise self._error(error, action) from error
        raise AssertionError("unreachable")

    def _replace_stale(self, error: Exception) -> bool:
        """Drop the connection if ``error`` says it is stale; True to retry on a new one."""
        return False

    def _rollback(self, db) -> None:
        try:
            db.execute("ROLLBACK")
        except self._ERRORS:
            pass  # the failed statement (or a lost connection) already ended it

    def _read(self, body):
        """Run ``body(db)`` in one read transaction (a consistent snapshot)."""
        with self._lock:
            db = self._begin(self._BEGIN_READ, "read")
            try:
                try:
                    return body(db)
                finally:
                    db.execute("COMMIT")
            except self._ERRORS as error:
                self._rollback(db)
                raise self._error(error, "read") from error

    # --- changes ------------------------------------------------------------------------------
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

        def body(db):
            if replace_source_prefix:
                db.execute(sql.DELETE_SOURCE_PREFIX,
                           (len(replace_source_prefix), replace_source_prefix))
            if not force:
                _check_conflicts(db, name, rows, threshold)
            now = time.time()
            db.execute(sql.INSERT_PERSON, (name, now))
            person_id = db.execute(sql.PERSON_ID, (name,)).fetchone()[0]
            db.executemany(sql.INSERT_SAMPLE, [(person_id, blob, now, own, score, chip)
                                               for blob, score, chip, own in rows])
            if replace_source_prefix:
                db.execute(sql.DELETE_EMPTY_PEOPLE)
            return len(rows)
        return self._write(body)

    def forget(self, name: str) -> int:
        """Remove ``name`` and all its samples; return the number of samples removed.

        An unknown name is not an error: it returns 0 and changes nothing (the change
        token is still bumped). Invalid names raise :class:`EnrollmentError`.
        """
        validate_name(name)

        def body(db):
            row = db.execute(sql.PERSON_ID, (name,)).fetchone()
            if row is None:
                return 0
            removed = db.execute(sql.DELETE_PERSON_SAMPLES, (row[0],)).rowcount
            db.execute(sql.DELETE_PERSON, (row[0],))
            return removed
        return self._write(body)

    def remove_source(self, source_prefix: str) -> int:
        """Delete every sample whose source starts with ``source_prefix``; return the count.

        People left without samples are removed too.
        """
        if not source_prefix:
            raise EnrollmentError("empty source prefix would remove every sample")

        def body(db):
            removed = db.execute(sql.DELETE_SOURCE_PREFIX,
                                 (len(source_prefix), source_prefix)).rowcount
            db.execute(sql.DELETE_EMPTY_PEOPLE)
            return removed
        return self._write(body)

    # --- queries ------------------------------------------------------------------------------
    def people(self) -> List[Tuple[str, int]]:
        """``[(name, sample_count), ...]`` sorted by name (code point order)."""
        return self._read(lambda db: [(row[0], int(row[1]))
                                      for row in db.execute(sql.PEOPLE).fetchall()])

    def count(self, name: Optional[str] = None) -> int:
        """Number of samples of ``name`` (0 if unknown), or of the whole gallery."""
        if name is None:
            return self._read(lambda db: int(db.execute(sql.COUNT_ALL).fetchone()[0]))
        return self._read(lambda db: int(db.execute(sql.COUNT_OF, (name,)).fetchone()[0]))

    def sources(self, prefix: str = "") -> dict:
        """``{source: (name, sample_count)}`` for sources starting with ``prefix``."""
        def body(db):
            rows = db.execute(sql.SOURCES, (len(prefix), prefix)).fetchall()
            return {source: (name, int(count)) for source, name, count in rows}
        return self._read(body)

    def matrix(self) -> Tuple[List[str], np.ndarray]:
        """``(row_names, descriptors)``: one row per usable sample, descriptors (N, 128)
        float32 (see the module docstring for the rows left out)."""
        return self.snapshot()[1:]

    def snapshot(self) -> Tuple[int, List[str], np.ndarray]:
        """``(change_token, row_names, descriptors)`` read in one consistent transaction
        (usable samples only, see the module docstring)."""
        token, names, matrix, problems = self._read(
            lambda db: (self._token(db),) + _matrix_of(db.execute(sql.MATRIX).fetchall()))
        self._report(token, problems)
        return token, names, matrix

    def _report(self, token: int, problems: List[str]) -> None:
        """Warn about unusable rows once per change (not on every read of the same data)."""
        key = (token, tuple(problems))
        if problems and key != getattr(self, "_reported", None):
            log.warning("gallery %s: left out samples a matcher cannot use, written by "
                        "another program: %s; remove them with facerec-enroll forget <name> "
                        "(recognition goes on with the other samples)",
                        self.path, "; ".join(problems))
        self._reported = key

    def _token(self, db) -> int:
        return check_generation(f"gallery {self.path}",
                                db.execute(sql.GENERATION).fetchone())

    def change_token(self) -> int:
        """A number that changes after every committed change by any process (one row read)."""
        return self._read(self._token)

    def export(self, descriptors: bool = True) -> dict:
        """The whole gallery as a JSON-serialisable dict (chips are not exported).

        ``{"format", "schema_version", "exported_at", "path", "people": [{"name", "created_at",
        "samples": [{"id", "created_at", "source", "score", "descriptor"?}]}]}`` with
        descriptors as lists of 128 floats when ``descriptors`` is true; times are Unix seconds.
        """
        def body(db):
            people = []
            for person_id, name, created in db.execute(sql.EXPORT_PEOPLE).fetchall():
                samples = []
                for sample_id, blob, sample_created, source, score in db.execute(
                        sql.EXPORT_SAMPLES, (person_id,)).fetchall():
                    entry = {"id": int(sample_id), "created_at": sample_created,
                             "source": source,
                             "score": None if score is None or not math.isfinite(score)
                             else score}
                    if descriptors:
                        entry["descriptor"] = [
                            float(v) for v in np.frombuffer(bytes(blob), dtype="<f4")]
                    samples.append(entry)
                people.append({"name": name, "created_at": created, "samples": samples})
            return {"format": FORMAT_NAME, "schema_version": SCHEMA_VERSION,
                    "exported_at": time.time(), "path": self.path, "people": people}
        return self._read(body)

    def chips(self, name: str) -> List[bytes]:
        """Stored aligned-chip images (JPEG bytes) of ``name``'s samples that have one."""
        return self._read(lambda db: [bytes(row[0]) for row in
                                      db.execute(sql.CHIPS, (name,)).fetchall()])

    # --- lifetime -----------------------------------------------------------------------------
    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_conflicts(db, name, rows, threshold) -> None:
    """Raise ConflictError when a new sample is nearer than ``threshold`` to another person."""
    names, matrix, _ = _matrix_of(db.execute(sql.OTHER_PEOPLES_SAMPLES, (name,)).fetchall())
    if not names:
        return
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
