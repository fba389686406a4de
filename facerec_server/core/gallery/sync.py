"""Keep an in-memory matcher equal to the gallery, whichever process changes it."""
from __future__ import annotations

import threading
import time

from .base import Gallery, GalleryError, log


class GalleryMatcherSync:
    """Keeps a matcher's gallery matrix equal to the gallery's content.

    ``matcher`` needs ``set_gallery(names, descriptors, negatives)`` (core.match.Matcher):
    it gets the known people's samples and the negative examples. ``anonymous`` (optional,
    another Matcher) gets the anonymous identities' samples. It listens
    through the gallery's :meth:`~facerec_server.core.gallery.base.Gallery.watch`:

    * **pushed** (PostgreSQL LISTEN/NOTIFY): the matcher is reloaded from the watch's thread
      as soon as any process commits. :meth:`refresh` then never touches the database, so
      frames never wait for it, and while the database is unreachable recognition goes on
      with the last gallery loaded (the watch reloads once it is back).
    * **polled** (SQLite): call :meth:`refresh` often (e.g. once per frame); it costs one
      small query at most every ``min_interval`` seconds and reloads the matrix only when
      any process changed the file.
    """

    def __init__(self, gallery: Gallery, matcher, min_interval: float = 0.5,
                 clock=time.monotonic, anonymous=None):
        self.gallery = gallery
        self.matcher = matcher
        self.anonymous = anonymous
        self._lock = threading.RLock()
        self.reloads = 0  # how many times the matcher was loaded
        self._failure = ""  # why the last polled check failed (logged once)
        with self._lock:  # a pushing watch's first call waits until _watch is set
            self._watch = gallery.watch(self._reload, min_interval=min_interval, clock=clock)

    @property
    def pushed(self) -> bool:
        """True when changes are pushed by the database (refresh() is then free)."""
        return self._watch.pushed

    @property
    def connected(self) -> bool:
        """False while a pushed watch has lost its database connection."""
        return self._watch.connected

    def _reload(self) -> None:
        with self._lock:
            snapshot = self.gallery.snapshot_all()
            self.matcher.set_gallery(*snapshot.known, negatives=snapshot.negatives)
            if self.anonymous is not None:
                self.anonymous.set_gallery(*snapshot.anonymous)
            self._watch.loaded(snapshot.token)
            self.reloads += 1

    def refresh(self, force: bool = False) -> bool:
        """Reload the matcher if the gallery changed (always when ``force``); True if it did.

        Raises GalleryError only when ``force`` cannot read the gallery; a polled check that
        cannot (another program broke the file, a database that went away) logs why once
        and returns False. The matcher keeps its gallery either way, so recognition goes on.
        """
        if self._watch.pushed and not force:
            return False  # the watch reloads by itself; never wait on the database here
        with self._lock:
            before = self.reloads
            if force:
                self._reload()
            else:
                try:
                    self._watch.poll()
                except GalleryError as error:
                    if str(error) != self._failure:
                        log.warning("%s; recognition goes on with the gallery loaded before",
                                    error)
                    self._failure = str(error)
                    return False
            self._failure = ""
            return self.reloads != before

    def close(self) -> None:
        """Stop watching (the gallery's close() does this too)."""
        self._watch.close()
