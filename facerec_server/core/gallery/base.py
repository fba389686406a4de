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
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from . import sql

#: Schema version (SQLite: ``PRAGMA user_version``; PostgreSQL: ``meta.schema_version``);
#: bump on any schema change and add the migration (sql.py). 2: anonymous identities,
#: negative examples, sightings. An older gallery is migrated when it is opened.
SCHEMA_VERSION = 2
#: Anonymous identities are named ``unknown-<n>``; n counts up and is never reused. Names of
#: that form are reserved for them.
ANONYMOUS_PREFIX = "unknown-"
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


@dataclass
class GallerySnapshot:
    """Everything a matcher needs, read in one transaction (see :meth:`Gallery.snapshot_all`).

    ``known``, ``anonymous``, ``negatives``: ``(row names, (N, 128) float32)`` of known
    people's samples, anonymous identities' samples, and negative examples ("this face is not
    <name>") by the name they are not.
    """

    token: int
    known: Tuple[List[str], np.ndarray]
    anonymous: Tuple[List[str], np.ndarray]
    negatives: Tuple[List[str], np.ndarray]


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


#: The unusable rows last warned about, per gallery (see Gallery._report); a few galleries
#: per process at most, bounded all the same.
_REPORTED: Dict[str, Tuple[str, ...]] = {}
_REPORTED_LOCK = threading.Lock()
_REPORTED_MAX = 64


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


def is_anonymous_name(name) -> bool:
    """True for names of the form ``unknown-<digits>`` (reserved for anonymous identities)."""
    return (isinstance(name, str) and name.startswith(ANONYMOUS_PREFIX)
            and name[len(ANONYMOUS_PREFIX):].isdigit())


def validate_person_name(name) -> str:
    """:func:`validate_name`, and not a name reserved for anonymous identities."""
    validate_name(name)
    if is_anonymous_name(name):
        raise EnrollmentError(
            f"{name!r} has the form of an anonymous identity's name ({ANONYMOUS_PREFIX}<n>); "
            "give the person a real name")
    return name


def check_version(where: str, version: int) -> None:
    """Raise GalleryError unless this facerec can open a gallery of ``version``: its own
    ``SCHEMA_VERSION``, or an older one it migrates (1 .. SCHEMA_VERSION - 1)."""
    if 1 <= version <= SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise GalleryError(
            f"{where} has gallery schema version {version}, newer than this facerec "
            f"understands ({SCHEMA_VERSION}); upgrade facerec. It was left untouched")
    raise GalleryError(
        f"{where} has gallery schema version {version}, older than this facerec's "
        f"({SCHEMA_VERSION}) and no migration exists; re-enroll into a new gallery. "
        "It was left untouched")


def migrate_data(db, version: int) -> None:
    """Data steps of the migration to ``version`` (after its statements, same transaction)."""
    if version == 2:  # anonymous ids start above any unknown-<n> a v1 gallery holds
        numbers = [int(row[0][len(ANONYMOUS_PREFIX):])
                   for row in db.execute(sql.NAMES_LIKE_ANONYMOUS).fetchall()
                   if is_anonymous_name(row[0])]
        db.execute(sql.SET_ANONYMOUS_NEXT, (str(max(numbers, default=0) + 1),))


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
        validate_person_name(name)
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

    # --- anonymous identities, names and corrections ----------------------------------------
    def add_anonymous(self, samples: Iterable, seen_at: Optional[float] = None,
                      max_identities: int = 0, source: str = "anonymous") -> str:
        """Create a new anonymous identity ``unknown-<n>`` holding ``samples``; return its name.

        ``n`` comes from a counter in the gallery and is never reused. With
        ``max_identities`` > 0, the least recently seen anonymous identities are removed in
        the same transaction so that at most that many remain.
        """
        rows = _sample_rows(samples, source, "a new anonymous identity")
        now = time.time()
        seen_at = now if seen_at is None else float(seen_at)

        def body(db):
            number = int(db.execute(sql.ANONYMOUS_NEXT).fetchone()[0])
            name = f"{ANONYMOUS_PREFIX}{number}"
            while db.execute(sql.PERSON_ID, (name,)).fetchone() is not None:
                number += 1  # a person of a v1 gallery may hold the name
                name = f"{ANONYMOUS_PREFIX}{number}"
            db.execute(sql.SET_ANONYMOUS_NEXT, (str(number + 1),))
            db.execute(sql.INSERT_ANONYMOUS, (name, now, seen_at))
            person_id = db.execute(sql.PERSON_ID, (name,)).fetchone()[0]
            _insert_samples(db, person_id, rows, now)
            if max_identities > 0:
                oldest = [row[0] for row in db.execute(sql.ANONYMOUS_OLDEST_FIRST).fetchall()
                          if row[0] != person_id]
                for victim in oldest[:max(0, len(oldest) + 1 - max_identities)]:
                    db.execute(sql.DELETE_PERSON, (victim,))
            return name
        return self._write(body)

    def add_anonymous_samples(self, name: str, samples: Iterable, max_samples: int = 0,
                              seen_at: Optional[float] = None,
                              source: str = "anonymous") -> int:
        """Add ``samples`` to the anonymous identity ``name``; with ``max_samples`` > 0 its
        oldest samples go so that at most that many remain. Returns the samples it holds.
        Raises EnrollmentError when ``name`` is not an anonymous identity (any more)."""
        rows = _sample_rows(samples, source, name)
        now = time.time()
        seen_at = now if seen_at is None else float(seen_at)

        def body(db):
            person_id = _anonymous_id(db, name)
            _insert_samples(db, person_id, rows, now)
            db.execute(sql.TOUCH_PERSON, (seen_at, person_id, seen_at))
            ids = [row[0] for row in db.execute(sql.SAMPLE_IDS_OLDEST_FIRST,
                                                (person_id,)).fetchall()]
            if max_samples > 0:
                for sample_id in ids[:max(0, len(ids) - max_samples)]:
                    db.execute(sql.DELETE_SAMPLE, (sample_id,))
                return min(len(ids), max_samples)
            return len(ids)
        return self._write(body)

    def name_anonymous(self, anonymous_id: str, name: str) -> Tuple[int, bool]:
        """Give the anonymous identity ``anonymous_id`` a name, in one transaction: it becomes
        ``name``, or, when ``name`` is already a person, its samples (and negative examples
        and sightings) are added to that person and it is removed.

        Returns ``(samples the person now has, merged)``. Raises EnrollmentError for an
        unknown or not anonymous ``anonymous_id`` or an invalid ``name``; nothing is written.
        """
        validate_person_name(name)

        def body(db):
            person_id = _anonymous_id(db, anonymous_id)
            target = db.execute(sql.PERSON, (name,)).fetchone()
            if target is None:
                db.execute(sql.RENAME_PERSON, (name, 0, person_id))
                merged = False
            else:
                _merge(db, person_id, target[0])
                merged = True
            return int(db.execute(sql.COUNT_OF, (name,)).fetchone()[0]), merged
        return self._write(body)

    def rename(self, name: str, new_name: str) -> int:
        """Rename the person (or anonymous identity) ``name`` to ``new_name``, which must not
        exist yet (to join two people use :meth:`merge`). The result is a known person.
        Returns their sample count. Raises EnrollmentError; nothing is written then."""
        validate_name(name)
        validate_person_name(new_name)

        def body(db):
            row = db.execute(sql.PERSON, (name,)).fetchone()
            if row is None:
                raise EnrollmentError(f"no person named {name!r} in the gallery")
            if name != new_name and db.execute(sql.PERSON, (new_name,)).fetchone() is not None:
                raise EnrollmentError(f"{new_name!r} is already in the gallery; merge {name!r} "
                                      "into it instead")
            db.execute(sql.RENAME_PERSON, (new_name, 0, row[0]))
            return int(db.execute(sql.COUNT_OF, (new_name,)).fetchone()[0])
        return self._write(body)

    def merge(self, source: str, target: str) -> int:
        """Move every sample, negative example and sighting of ``source`` to ``target`` and
        remove ``source``, in one transaction; return ``target``'s sample count. Both must
        exist (people or anonymous identities) and differ."""
        validate_name(source)
        validate_name(target)
        if source == target:
            raise EnrollmentError(f"cannot merge {source!r} into itself")

        def body(db):
            rows = [db.execute(sql.PERSON, (n,)).fetchone() for n in (source, target)]
            for n, row in zip((source, target), rows):
                if row is None:
                    raise EnrollmentError(f"no person named {n!r} in the gallery")
            _merge(db, rows[0][0], rows[1][0])
            return int(db.execute(sql.COUNT_OF, (target,)).fetchone()[0])
        return self._write(body)

    def remove_sample(self, sample_id: int) -> str:
        """Delete one sample by its id (see :meth:`samples`); a person left without samples
        is removed too. Returns the name it belonged to; EnrollmentError for an unknown id."""
        try:
            sample_id = int(sample_id)
        except (TypeError, ValueError):
            raise EnrollmentError(f"a sample id is a whole number, got {sample_id!r}") from None

        def body(db):
            owner = db.execute(sql.SAMPLE_OWNER, (sample_id,)).fetchone()
            if owner is None:
                raise EnrollmentError(f"no sample with id {sample_id} in the gallery "
                                      "(list them with samples NAME)")
            db.execute(sql.DELETE_SAMPLE, (sample_id,))
            if not db.execute(sql.SAMPLE_IDS_OLDEST_FIRST, (owner[0],)).fetchone():
                db.execute(sql.DELETE_PERSON, (owner[0],))
            return owner[1]
        return self._write(body)

    def add_negatives(self, name: str, descriptors: Iterable, source: str = "") -> int:
        """Record that faces with ``descriptors`` are *not* ``name`` (negative examples):
        a matcher then refuses ``name`` for a face nearer to one of them than to ``name``'s
        own samples. Returns how many were added; ``name`` must exist."""
        validate_name(name)
        rows = [(_descriptor_blob(_as_sample(d).descriptor),) for d in descriptors]
        if not rows:
            raise EnrollmentError(f"no face given to mark as not {name!r}")

        def body(db):
            row = db.execute(sql.PERSON, (name,)).fetchone()
            if row is None:
                raise EnrollmentError(f"no person named {name!r} in the gallery")
            now = time.time()
            db.executemany(sql.INSERT_NEGATIVE, [(row[0], blob, now, str(source))
                                                 for blob, in rows])
            return len(rows)
        return self._write(body)

    def record_sightings(self, sightings: Iterable[Tuple[str, str, float, float, int]],
                         max_rows: int = 0, retention: float = 0.0,
                         now: Optional[float] = None) -> List[str]:
        """Add ``(name, input, first_seen, last_seen, count)`` sightings (merged with the
        stored row of that person and input: earliest first, latest last, counts added) and
        update the people's last-seen times, in one transaction. Then the bounds: anonymous
        identities not seen for ``retention`` seconds (> 0) are removed, and the sightings
        table keeps its ``max_rows`` (> 0) most recent rows. Names no longer in the gallery
        are skipped. Returns the anonymous identities removed."""
        items = list(sightings)
        now = time.time() if now is None else float(now)

        def body(db):
            for name, source, first, last, count in items:
                person = db.execute(sql.PERSON, (name,)).fetchone()
                if person is None:
                    continue
                _add_sighting(db, person[0], str(source), float(first), float(last),
                              int(count))
                db.execute(sql.TOUCH_PERSON, (float(last), person[0], float(last)))
            removed = []
            if retention > 0:
                for row in db.execute(sql.ANONYMOUS_EXPIRED, (now - retention,)).fetchall():
                    removed.append(row[0])
                names = {}
                for person_id in removed:
                    names[person_id] = db.execute(sql.PERSON_NAME, (person_id,)).fetchone()[0]
                    db.execute(sql.DELETE_PERSON, (person_id,))
                removed = [names[p] for p in removed]
            if max_rows > 0:
                total = int(db.execute(sql.COUNT_SIGHTINGS).fetchone()[0])
                if total > max_rows:
                    ids = [row[0] for row in db.execute(sql.SIGHTINGS_OLDEST_FIRST).fetchall()]
                    for sighting_id in ids[:total - max_rows]:
                        db.execute(sql.DELETE_SIGHTING, (sighting_id,))
            return removed
        return self._write(body)

    # --- queries ------------------------------------------------------------------------------
    def people(self) -> List[Tuple[str, int]]:
        """``[(name, sample_count), ...]`` of the known people (not the anonymous
        identities: see :meth:`anonymous`), sorted by name (code point order)."""
        return self._read(lambda db: [(row[0], int(row[1]))
                                      for row in db.execute(sql.PEOPLE).fetchall()])

    def count(self, name: Optional[str] = None) -> int:
        """Number of samples of ``name`` (0 if unknown), or of all known people."""
        if name is None:
            return self._read(lambda db: int(db.execute(sql.COUNT_ALL).fetchone()[0]))
        return self._read(lambda db: int(db.execute(sql.COUNT_OF, (name,)).fetchone()[0]))

    def sources(self, prefix: str = "") -> dict:
        """``{source: (name, sample_count)}`` for sources starting with ``prefix``."""
        def body(db):
            rows = db.execute(sql.SOURCES, (len(prefix), prefix)).fetchall()
            return {source: (name, int(count)) for source, name, count in rows}
        return self._read(body)

    def anonymous(self) -> List[dict]:
        """The anonymous identities, oldest first: ``[{"name", "samples", "created_at",
        "last_seen"}]`` (times in Unix seconds; last_seen None when never recorded)."""
        return self._read(lambda db: [
            {"name": row[0], "samples": int(row[1]), "created_at": row[2], "last_seen": row[3]}
            for row in db.execute(sql.ANONYMOUS).fetchall()])

    def samples(self, name: str) -> List[dict]:
        """``[{"id", "created_at", "source", "score"}]`` of ``name``'s samples, oldest first
        (the ids :meth:`remove_sample` takes)."""
        return self._read(lambda db: [
            {"id": int(row[0]), "created_at": row[1], "source": row[2],
             "score": None if row[3] is None or not math.isfinite(row[3]) else row[3]}
            for row in db.execute(sql.SAMPLES_OF, (name,)).fetchall()])

    def sightings(self, name: str = "", source: str = "") -> List[dict]:
        """Who was seen where: ``[{"name", "anonymous", "input", "first_seen", "last_seen",
        "count"}]``, most recent first; ``name`` / ``source`` (an input) filter when given.
        ``count`` is the number of separate visits (face tracks)."""
        name, source = str(name or ""), str(source or "")
        return self._read(lambda db: [
            {"name": row[0], "anonymous": bool(row[1]), "input": row[2],
             "first_seen": row[3], "last_seen": row[4], "count": int(row[5])}
            for row in db.execute(sql.SIGHTINGS, (name, name, source, source)).fetchall()])

    def snapshot_all(self) -> GallerySnapshot:
        """Known samples, anonymous identities' samples and negative examples with the change
        token, read in one consistent transaction (usable rows only, see the module
        docstring)."""
        token, parts = self._read(lambda db: (self._token(db), [
            _matrix_of(db.execute(query).fetchall())
            for query in (sql.MATRIX, sql.ANONYMOUS_MATRIX, sql.NEGATIVES_MATRIX)]))
        self._report(token, [problem for _, _, problems in parts for problem in problems])
        return GallerySnapshot(token, *[(names, matrix) for names, matrix, _ in parts])

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
        """Warn about unusable rows once per gallery and set of problems: not on every read of
        the same data, nor once per Gallery object of one process (the server opens several)."""
        key = tuple(problems)
        with _REPORTED_LOCK:
            if _REPORTED.get(self.path, ()) == key:
                return
            if self.path not in _REPORTED and len(_REPORTED) >= _REPORTED_MAX:
                _REPORTED.pop(next(iter(_REPORTED)))
            _REPORTED[self.path] = key
        if problems:
            log.warning("gallery %s: left out samples a matcher cannot use, written by "
                        "another program: %s; remove them with facerec-enroll forget <name> "
                        "(recognition goes on with the other samples)",
                        self.path, "; ".join(problems))

    def _token(self, db) -> int:
        return check_generation(f"gallery {self.path}",
                                db.execute(sql.GENERATION).fetchone())

    def change_token(self) -> int:
        """A number that changes after every committed change by any process (one row read)."""
        return self._read(self._token)

    def export(self, descriptors: bool = True) -> dict:
        """The whole gallery as a JSON-serialisable dict (chips are not exported).

        ``{"format", "schema_version", "exported_at", "path", "people": [{"name", "created_at",
        "anonymous", "last_seen", "samples": [{"id", "created_at", "source", "score",
        "descriptor"?}]}]}`` with
        descriptors as lists of 128 floats when ``descriptors`` is true; times are Unix seconds.
        """
        def body(db):
            people = []
            for person_id, name, created, anonymous, last_seen in db.execute(
                    sql.EXPORT_PEOPLE).fetchall():
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
                people.append({"name": name, "created_at": created, "samples": samples,
                               "anonymous": bool(anonymous), "last_seen": last_seen})
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


def _sample_rows(samples: Iterable, source: str, what: str) -> list:
    """(blob, score, chip, source) rows of ``samples``; EnrollmentError when malformed/none."""
    rows = []
    for item in samples:
        sample = _as_sample(item)
        score = None if sample.score is None else float(sample.score)
        chip = None if sample.chip is None else bytes(sample.chip)
        own = str(source) if sample.source is None else str(sample.source)
        rows.append((_descriptor_blob(sample.descriptor), score, chip, own))
    if not rows:
        raise EnrollmentError(f"no samples to add for {what}")
    return rows


def _insert_samples(db, person_id, rows, now) -> None:
    db.executemany(sql.INSERT_SAMPLE, [(person_id, blob, now, own, score, chip)
                                       for blob, score, chip, own in rows])


def _anonymous_id(db, name: str) -> int:
    """The row id of the anonymous identity ``name``; EnrollmentError when there is none."""
    row = db.execute(sql.PERSON, (name,)).fetchone()
    if row is None:
        raise EnrollmentError(f"no anonymous identity {name!r} in the gallery (list them with "
                              "`facerec-enroll anonymous`)")
    if not row[1]:
        raise EnrollmentError(f"{name!r} is a known person, not an anonymous identity")
    return row[0]


def _add_sighting(db, person_id, source, first, last, count) -> None:
    row = db.execute(sql.SIGHTING, (person_id, source)).fetchone()
    if row is None:
        db.execute(sql.INSERT_SIGHTING, (person_id, source, first, last, count))
    else:
        db.execute(sql.UPDATE_SIGHTING, (min(first, row[1]), max(last, row[2]),
                                         int(row[3]) + count, row[0]))


def _merge(db, source_id, target_id) -> None:
    """Samples, negative examples and sightings of ``source_id`` to ``target_id``; the
    source row is removed (the caller's transaction)."""
    db.execute(sql.MOVE_SAMPLES, (target_id, source_id))
    db.execute(sql.MOVE_NEGATIVES, (target_id, source_id))
    for source, first, last, count in db.execute(sql.SIGHTINGS_OF, (source_id,)).fetchall():
        _add_sighting(db, target_id, source, first, last, int(count))
    seen = db.execute(sql.PERSON_LAST_SEEN, (source_id,)).fetchone()[0]
    if seen is not None:
        db.execute(sql.TOUCH_PERSON, (seen, target_id, seen))
    db.execute(sql.DELETE_PERSON_SIGHTINGS, (source_id,))
    db.execute(sql.DELETE_PERSON, (source_id,))
