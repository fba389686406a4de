"""Files facerec is told to read: regular files of a sane size, never a FIFO or a device.

Every file a user names (photos, model files, the reference file and its photos, the
gallery file, images of a camera folder, the bridge's certificates and tokens) goes through
:func:`check_regular` or :func:`read_regular` before it is read: a FIFO would block the
reader forever, ``/dev/zero`` never ends, and a 4 GB file given as a model would be read
whole before anything could refuse it. The checks are made on the open descriptor where the
file is read here (no window for a swap between the check and the read); files opened by a
library (dlib, OpenCV, SQLite) are checked by path just before it opens them.

:func:`expand_user` expands ``~`` and ``~user`` and refuses a ``~user`` that names no user
(Python's ``expanduser`` leaves it alone, and ``~nouser/x.db`` would become a folder named
``~nouser`` in the working directory).

:func:`write_file` writes an output the way a user expects of a path: a regular file is
replaced atomically (through a symbolic link: the file it points to), and anything else (a
FIFO, ``/dev/stdout``, a device) is written to, never replaced by a file.

Errors are :class:`UnusableFile` (a ``ValueError``) with one line naming the file, what it
was wanted for and what to do; callers re-raise them as their own error type where they
have one (``ModelError``, ``GalleryError``...).
"""
from __future__ import annotations

import os
import stat
import tempfile
from typing import Optional

#: Largest photo (enrollment, reference files, camera folders): a 12 MP JPEG is 3-8 MB, a
#: 50 MP PNG about 100 MB.
MAX_IMAGE_FILE = 128 * 1024 * 1024
#: Largest dlib face model (the standard ones are 0.7-100 MB).
MAX_FACE_MODEL_FILE = 256 * 1024 * 1024
#: Largest object model (ONNX's own limit is 2 GB).
MAX_OBJECT_MODEL_FILE = 2 * 1024 * 1024 * 1024
#: Largest text file (reference file, labels file).
MAX_TEXT_FILE = 16 * 1024 * 1024


class UnusableFile(ValueError):
    """A file cannot be used: missing, not a regular file, too big, unreadable.

    ``str()`` is the whole line (naming the file); ``reason`` the part after the file's
    name, for reports that name the file themselves (``photo.jpg: <reason>``)."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


def file_kind(mode: int) -> str:
    """'directory', 'FIFO', 'character device', ... for an ``st_mode``."""
    for test, kind in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return "special file"


def shown(path: str) -> str:
    """``path`` for a one-line message: as it is when printable, else its repr (a name
    holding a newline or a control character)."""
    return path if str(path).isprintable() else repr(path)


def expand_user(path: str, what: str = "path") -> str:
    """``path`` with ``~`` / ``~user`` expanded; UnusableFile for a ``~user`` that names no
    user on this machine, or for a path holding a NUL character (no file name can)."""
    path = os.fspath(path)
    if "\x00" in str(path):
        raise UnusableFile(f"{what} {path!r} holds a NUL character, which no file name can "
                           "hold: give the path without it")
    expanded = os.path.expanduser(path)
    if expanded.startswith("~"):
        user = expanded[1:].split(os.sep, 1)[0]
        raise UnusableFile(f"{what} {path!r}: there is no user {user!r} on this machine to "
                           f"expand ~{user}; give an absolute path")
    return expanded


def _check_info(info: os.stat_result, path: str, what: str,
                max_bytes: Optional[int]) -> None:
    if not stat.S_ISREG(info.st_mode):
        reason = f"not a regular file (a {file_kind(info.st_mode)})"
        raise UnusableFile(f"{what} {path!r} is {reason}: give the path of a file", reason)
    if max_bytes is not None and info.st_size > max_bytes:
        reason = f"{info.st_size} bytes, more than a {what} can be ({max_bytes} bytes)"
        raise UnusableFile(f"{what} {path!r} is {reason}: is it the right file?", reason)


def _os_error(error: OSError, path: str, what: str) -> UnusableFile:
    strerror = error.strerror or str(error)
    return UnusableFile(f"cannot read {what} {path!r}: {strerror}", f"cannot read ({strerror})")


def check_regular(path, what: str = "file", max_bytes: Optional[int] = None) -> int:
    """The size of ``path`` (symbolic links followed) if it is a regular file of at most
    ``max_bytes`` (None: any size); otherwise UnusableFile."""
    path = os.fspath(path)
    try:
        info = os.stat(path)
    except OSError as error:
        raise _os_error(error, path, what) from None
    _check_info(info, path, what, max_bytes)
    return info.st_size


def _open_regular(path: str, what: str, max_bytes: Optional[int]) -> int:
    """A descriptor of ``path`` opened without blocking (a FIFO would block ``open``
    itself) and checked on the open descriptor (no window for a swap)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise _os_error(error, path, what) from None
    try:
        _check_info(os.fstat(fd), path, what, max_bytes)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_head(path, what: str = "file", count: int = 100) -> bytes:
    """The first ``count`` bytes of ``path`` if it is a regular file (of any size)."""
    path = os.fspath(path)
    fd = _open_regular(path, what, None)
    try:
        return os.read(fd, count)
    except OSError as error:
        raise _os_error(error, path, what) from None
    finally:
        os.close(fd)


def read_regular(path, what: str = "file", max_bytes: int = MAX_TEXT_FILE) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``.

    Opened without blocking and checked on the open descriptor; at most ``max_bytes`` are
    read even if the file grows meanwhile.
    """
    path = os.fspath(path)
    fd = _open_regular(path, what, max_bytes)
    try:
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            reason = f"more than {max_bytes} bytes (it grew while it was read)"
            raise UnusableFile(f"{what} {path!r} holds {reason}: is it the right file?", reason)
        return b"".join(chunks)
    except OSError as error:
        raise _os_error(error, path, what) from None
    finally:
        os.close(fd)


def write_file(path, data: bytes, what: str = "output") -> None:
    """Write ``data`` to ``path`` (see the module docstring); UnusableFile on failure.

    A regular file (or a new one) is written under a temporary name in its folder, synced
    and renamed over it, keeping an existing file's permissions (a new one gets the umask's),
    so readers see the old or the new content, never a part. A symbolic link is followed and
    stays. A directory is refused. Anything else is opened and written in place: a FIFO's
    reader gets the data, a full device reports "No space left on device"."""
    path = os.fspath(path)
    real = os.path.realpath(path)
    try:
        info: Optional[os.stat_result] = os.stat(real)
    except FileNotFoundError:
        info = None
    except OSError as error:
        raise UnusableFile(f"cannot write {what} {path!r}: {error.strerror}") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise UnusableFile(f"{what} {path!r} is a directory: give a file name")
    if info is not None and not stat.S_ISREG(info.st_mode):
        try:
            with open(real, "wb") as out:  # a FIFO, a device: written to, never replaced
                out.write(data)
        except OSError as error:
            raise UnusableFile(f"cannot write {what} {path!r} (a {file_kind(info.st_mode)}): "
                               f"{error.strerror}") from None
        return
    temp = None
    try:
        handle, temp = tempfile.mkstemp(prefix=f".{os.path.basename(real)}.",
                                        dir=os.path.dirname(real))
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if info is not None:
            mode = stat.S_IMODE(info.st_mode)
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(temp, mode)
        os.replace(temp, real)
        temp = None
    except OSError as error:
        raise UnusableFile(f"cannot write {what} {path!r}: {error.strerror}") from None
    finally:
        if temp is not None:
            try:
                os.unlink(temp)
            except OSError:
                pass
