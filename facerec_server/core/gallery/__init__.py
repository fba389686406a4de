"""Known-people gallery: 128-D face descriptors per person, on SQLite or PostgreSQL.

``Gallery(location)`` opens it: a file path (SQLite, the embedded default) or a
``postgresql://`` URL (one gallery shared by servers on several machines). Modules:

* :mod:`.base`: the one API (:class:`Gallery`), errors, samples, name rules; every operation
  written once over a database connection (enrollment; anonymous identities, naming,
  rename, merge, remove one sample, negative examples, sightings); the change watch interface.
* :mod:`.sql`: every SQL statement, shared by both backends, and the two schemas.
* :mod:`.sqlite`: :class:`SQLiteGallery` (file identity, WAL, creation; token polling).
* :mod:`.postgres`: :class:`~.postgres.PostgresGallery` (connection, reconnect with back-off,
  schema creation; LISTEN/NOTIFY watch). Imported only for a URL: psycopg is needed there.
* :mod:`.sync`: :class:`GalleryMatcherSync`, a matcher kept equal to the gallery.
"""
from .base import (ANONYMOUS_PREFIX, DEFAULT_PATH, DEFAULT_THRESHOLD, DESCRIPTOR_SIZE,
                   FORMAT_NAME, MAX_NAME_LENGTH, SCHEMA_VERSION, ChangeWatch, ConflictError,
                   EnrollmentError, Gallery, GalleryError, GallerySnapshot, GalleryUnavailable,
                   Sample, TokenWatch, backend_class, default_path, descriptors_of,
                   is_anonymous_name, is_postgres_url, validate_name, validate_person_name)
from .sqlite import APPLICATION_ID, DEFAULT_BUSY_TIMEOUT, SQLiteGallery
from .sync import GalleryMatcherSync

__all__ = [
    "ANONYMOUS_PREFIX", "GallerySnapshot", "is_anonymous_name", "validate_person_name",
    "APPLICATION_ID", "DEFAULT_BUSY_TIMEOUT", "DEFAULT_PATH", "DEFAULT_THRESHOLD",
    "DESCRIPTOR_SIZE", "FORMAT_NAME", "MAX_NAME_LENGTH", "SCHEMA_VERSION", "ChangeWatch",
    "ConflictError", "EnrollmentError", "Gallery", "GalleryError", "GalleryMatcherSync",
    "GalleryUnavailable", "SQLiteGallery", "Sample", "TokenWatch", "backend_class",
    "default_path", "descriptors_of", "is_postgres_url", "validate_name",
]
