"""Import a reference file (the original project's known-people list) into the gallery.

Format (JSON)::

    [{"tag": "alice", "photos": ["a1.jpg", "a2.jpg"]}, {"tag": "bob", "photos": "b.jpg"}]

``photos`` is a list of paths or a single path, relative to the reference file's folder
(absolute paths are used as they are). Each photo must hold exactly one usable face (the
:class:`~facerec_server.core.enroll.Enroller` rules) and becomes one sample of ``tag``.

Idempotent: each sample's source is ``reference:<path as written>#<sha256 of the file>``.
A photo whose path and content are already in the gallery is skipped ("unchanged"); a photo
whose content changed replaces the samples of its old content (any tag) in one transaction;
a photo re-listed under another tag moves to that tag. A changed photo that now fails
(no face, conflict...) is reported and its old samples are kept. Photos dropped from the
file are not removed (use ``facerec-enroll forget``).

Bad entries (not an object, missing/invalid tag, missing photos, unreadable file, no usable
face, conflict with another person) are reported and skipped; the rest is imported.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from . import files
from .enroll import Enroller
from .gallery import ConflictError, EnrollmentError, validate_name

SOURCE_PREFIX = "reference:"


class ReferenceError(ValueError):
    """The reference file as a whole is unusable (missing, not JSON, not a list)."""


@dataclass
class ReferenceReport:
    """What an import did. Each list holds ``(tag, photo, detail)`` tuples.

    ``imported``: photos added (detail: "new" or "changed: replaced N samples").
    ``unchanged``: photos already in the gallery with the same content.
    ``errors``: entries or photos reported and skipped (detail: why).
    """

    imported: List[Tuple[str, str, str]] = field(default_factory=list)
    unchanged: List[Tuple[str, str, str]] = field(default_factory=list)
    errors: List[Tuple[str, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing had to be skipped."""
        return not self.errors

    def summary(self) -> str:
        """One line: how many photos were imported, unchanged and skipped."""
        return (f"{len(self.imported)} photos imported, {len(self.unchanged)} unchanged, "
                f"{len(self.errors)} skipped")

    def lines(self) -> List[str]:
        """Human-readable report: one line per imported or skipped photo/entry, then the
        summary (unchanged photos are only counted)."""
        out = [f"imported {photo} as {tag!r} ({detail})" for tag, photo, detail in self.imported]
        out += [f"skipped {where}{f' ({tag!r})' if tag else ''}: {detail}"
                for tag, where, detail in self.errors]
        return out + [self.summary()]


def photo_source(relpath: str, digest: str) -> str:
    """Source string stored with a reference photo's sample."""
    return f"{SOURCE_PREFIX}{relpath}#{digest}"


def load_reference(path: str) -> list:
    """The entry list of a reference file; raises :class:`ReferenceError` if unusable (not
    a regular file of at most 16 MiB, not JSON, nested too deeply, not a list)."""
    try:
        data = json.loads(files.read_regular(path, "reference file", files.MAX_TEXT_FILE)
                          .decode("utf-8"))
    except files.UnusableFile as error:
        raise ReferenceError(str(error)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReferenceError(f"reference file {path} is not valid JSON: {error}") from error
    except RecursionError:
        raise ReferenceError(f"reference file {path} is nested too deeply to read: it must "
                             "hold a list of {\"tag\": ..., \"photos\": ...} objects") from None
    if not isinstance(data, list):
        raise ReferenceError(
            f"reference file {path} must hold a JSON list of {{\"tag\": ..., \"photos\": ...}} "
            f"objects, got a {type(data).__name__}")
    return data


def _photos_of(entry) -> List[str]:
    photos = entry.get("photos")
    if isinstance(photos, str):
        photos = [photos]
    if not isinstance(photos, list) or not photos:
        raise ValueError("'photos' must be a path or a non-empty list of paths")
    if not all(isinstance(p, str) and p for p in photos):
        raise ValueError("every photo must be a non-empty path string")
    return photos


def import_reference(path: str, enroller: Enroller, force: bool = False,
                     progress: Optional[Callable[[int, int, str, Optional[str]], None]] = None
                     ) -> ReferenceReport:
    """Import the reference file at ``path`` into ``enroller.gallery`` (see module docstring).

    ``force`` skips the check against other people. ``progress(done, total, photo, error)``
    is called after each photo. Raises :class:`ReferenceError` when the file itself is
    unusable; :class:`~facerec_server.core.gallery.GalleryError` propagates.
    """
    entries = load_reference(path)
    folder = os.path.dirname(os.path.abspath(path))
    report = ReferenceReport()
    jobs = []  # (tag, photo)
    for number, entry in enumerate(entries, 1):
        where = f"entry {number}"
        if not isinstance(entry, dict):
            report.errors.append(("", where, f"not an object: {entry!r:.60}"))
            continue
        tag = entry.get("tag")
        try:
            validate_name(tag)
        except EnrollmentError as error:
            report.errors.append((str(tag or ""), where, f"bad tag: {error}"))
            continue
        try:
            photos = _photos_of(entry)
        except ValueError as error:
            report.errors.append((tag, where, str(error)))
            continue
        jobs.extend((tag, photo) for photo in photos)

    gallery = enroller.gallery
    for done, (tag, photo) in enumerate(jobs, 1):
        error = _import_photo(enroller, gallery, folder, tag, photo, force, report)
        if progress is not None:
            progress(done, len(jobs), photo, error)
    return report


def _import_photo(enroller, gallery, folder, tag, photo, force, report) -> Optional[str]:
    """Import one photo; record the outcome in ``report``; return the error or None."""
    full = photo if os.path.isabs(photo) else os.path.join(folder, photo)
    try:
        data = files.read_regular(full, "photo", files.MAX_IMAGE_FILE)
    except files.UnusableFile as error:
        detail = str(error)
        report.errors.append((tag, photo, detail))
        return detail
    key = os.path.normpath(photo)
    source = photo_source(key, hashlib.sha256(data).hexdigest())
    prefix = photo_source(key, "")
    existing = gallery.sources(prefix)
    if existing.get(source, ("",))[0] == tag:
        report.unchanged.append((tag, photo, "unchanged"))
        return None
    sample, reason = enroller.sample_from_image(data)
    if sample is None:
        detail = f"{reason}; skipped" + (" (old samples kept)" if existing else "")
        report.errors.append((tag, photo, detail))
        return detail
    try:
        gallery.add_samples(tag, [sample], source=source, force=force,
                            threshold=enroller.config.threshold, replace_source_prefix=prefix)
    except ConflictError as error:
        detail = (f"looks like {error.other!r} (distance {error.distance:.3f}); skipped, use "
                  "force to import anyway")
        report.errors.append((tag, photo, detail))
        return detail
    replaced = sum(count for _, count in existing.values())
    report.imported.append((tag, photo, f"changed: replaced {replaced} samples" if existing
                            else "new"))
    return None
