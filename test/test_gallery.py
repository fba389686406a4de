"""Gallery store: contents, validation, foreign/old/new files, several processes.

Tests taking ``location`` run on both backends: an SQLite file and a database on a real
PostgreSQL server (skipped, with the reason, where PostgreSQL cannot run).
"""
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from facerec_server.core.gallery import (APPLICATION_ID, SCHEMA_VERSION, ConflictError,
                                         EnrollmentError, Gallery, GalleryError,
                                         GalleryMatcherSync, Sample)
from facerec_server.core.match import Matcher

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _descriptors(count, seed, offset=0.0):
    """Synthetic descriptors: far (>> 0.6) from those of another offset."""
    rng = np.random.default_rng(seed)
    return (rng.normal(scale=0.02, size=(count, 128)) + offset).astype(np.float32)


def _child(code, *args, **kwargs):
    """Start a Python child that runs ``code`` with this repository importable."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)] + [str(a) for a in args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "sub" / "dir" / "gallery.db")


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    """A new gallery's location: an SQLite path, or a postgresql:// URL of a new database."""
    if request.param == "sqlite":
        return str(tmp_path / "sub" / "dir" / "gallery.db")
    return request.getfixturevalue("pg_url")


def test_add_list_forget_matrix(location):
    with Gallery(location) as gallery:
        assert os.path.isfile(location) or location.startswith("postgresql://")
        assert gallery.people() == []
        names, matrix = gallery.matrix()
        assert names == [] and matrix.shape == (0, 128) and matrix.dtype == np.float32
        alice = _descriptors(3, 1, 0.0)
        bob = _descriptors(2, 2, 1.0)
        assert gallery.add_samples("alice", alice, source="test") == 3
        assert gallery.add_samples("bob", [Sample(d, score=1.5, chip=b"\xff\xd8jpeg")
                                           for d in bob]) == 2
        assert gallery.add_samples("alice", alice[:1] + 0.3, source="again") == 1
        assert gallery.people() == [("alice", 4), ("bob", 2)]
        names, matrix = gallery.matrix()
        assert names == ["alice"] * 3 + ["bob"] * 2 + ["alice"]
        assert matrix.dtype == np.float32 and matrix.shape == (6, 128)
        np.testing.assert_array_equal(matrix[:3], alice)
        np.testing.assert_array_equal(matrix[3:5], bob)
        assert gallery.chips("bob") == [b"\xff\xd8jpeg"] * 2
        assert gallery.sources() == {"test": ("alice", 3), "": ("bob", 2),
                                     "again": ("alice", 1)}
        exported = json.loads(json.dumps(gallery.export()))
        assert [p["name"] for p in exported["people"]] == ["alice", "bob"]
        assert exported["schema_version"] == SCHEMA_VERSION
        assert exported["people"][1]["samples"][0]["score"] == 1.5
        np.testing.assert_allclose(exported["people"][1]["samples"][0]["descriptor"], bob[0])
        assert "descriptor" not in gallery.export(descriptors=False)["people"][0]["samples"][0]
        assert gallery.forget("alice") == 4
        assert gallery.forget("alice") == 0  # unknown: 0, not an error
        assert gallery.people() == [("bob", 2)]
        assert gallery.matrix()[0] == ["bob", "bob"]
    with Gallery(location) as again:  # persisted
        assert again.people() == [("bob", 2)]


def test_conflict_check_and_force(location):
    with Gallery(location) as gallery:
        gallery.add_samples("alice", _descriptors(2, 1, 0.0))
        token = gallery.change_token()
        close_to_alice = _descriptors(1, 3, 0.0)
        with pytest.raises(ConflictError, match="looks like 'alice'") as info:
            gallery.add_samples("bob", np.vstack([_descriptors(1, 4, 1.0), close_to_alice]))
        assert info.value.index == 1 and info.value.other == "alice"
        assert gallery.people() == [("alice", 2)] and gallery.change_token() == token
        assert gallery.add_samples("alice", close_to_alice) == 1  # same person: fine
        assert gallery.add_samples("bob", close_to_alice, force=True) == 1
        assert gallery.people() == [("alice", 3), ("bob", 1)]


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "al\nice", "a\x00b", "tab\there",
                                  "bidi\u202eevil", " alice", "alice "])
def test_invalid_names_write_nothing(location, name):
    with Gallery(location) as gallery:
        gallery.add_samples("alice", _descriptors(1, 1))
        before = (gallery.people(), gallery.change_token())
        with pytest.raises(EnrollmentError) as info:
            gallery.add_samples(name, _descriptors(1, 2, 1.0))
        assert isinstance(info.value, ValueError) and str(info.value)
        with pytest.raises(EnrollmentError):
            gallery.forget(name)
        assert (gallery.people(), gallery.change_token()) == before


def test_valid_names(location):
    with Gallery(location) as gallery:
        for index, name in enumerate(["x" * 64, "Zoë Ångström", "李小龙", "o'brien-smith jr."]):
            assert gallery.add_samples(name, _descriptors(1, index, index)) == 1
        assert len(gallery.people()) == 4


def test_bad_samples_write_nothing(location):
    with Gallery(location) as gallery:
        with pytest.raises(EnrollmentError, match="no samples"):
            gallery.add_samples("alice", [])
        with pytest.raises(EnrollmentError, match="128 values"):
            gallery.add_samples("alice", [np.zeros(127)])
        bad = np.zeros(128)
        bad[5] = np.nan
        with pytest.raises(EnrollmentError, match="NaN"):
            gallery.add_samples("alice", [np.zeros(128), bad])
        assert gallery.people() == [] and gallery.change_token() == 0


def _set_pragma(path, pragma):
    conn = sqlite3.connect(path)
    conn.execute(pragma)
    conn.commit()
    conn.close()


def _snapshot(path):
    with open(path, "rb") as handle:
        content = handle.read()
    return content, sorted(os.listdir(os.path.dirname(path)))


@pytest.mark.parametrize("version, word", [(SCHEMA_VERSION + 1, "newer"),
                                           (0, "older")])  # 1 migrates (test_gallery_people)
def test_other_schema_version_refused_untouched(path, version, word):
    Gallery(path).close()
    with Gallery(path) as gallery:
        gallery.add_samples("alice", _descriptors(1, 1))
    _set_pragma(path, f"PRAGMA user_version = {version}")
    before = _snapshot(path)
    with pytest.raises(GalleryError, match=f"schema version {version}, {word}"):
        Gallery(path)
    assert _snapshot(path) == before


def test_foreign_files_refused_untouched(tmp_path):
    cases = {}
    foreign = str(tmp_path / "foreign.db")
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE people (name TEXT)")
    conn.execute("INSERT INTO people VALUES ('x')")
    conn.commit()
    conn.close()
    cases[foreign] = "SQLite database but not a facerec gallery"
    other_app = str(tmp_path / "other_app.db")
    _set_pragma(other_app, "PRAGMA application_id = 1234")
    _set_pragma(other_app, "CREATE TABLE t (x)")
    cases[other_app] = "not a facerec gallery"
    text = tmp_path / "notes.db"
    text.write_text("these are my notes, not a database\n" * 10)
    cases[str(text)] = "not an SQLite database"
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    cases[str(empty)] = "not an SQLite database"
    for target, message in cases.items():
        before = _snapshot(target)
        with pytest.raises(GalleryError, match=message):
            Gallery(target)
        assert _snapshot(target) == before, target


def test_new_file_is_identified(path):
    Gallery(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert sorted(os.listdir(os.path.dirname(path))) == ["gallery.db"]  # no temp leftovers


def test_threads_share_one_gallery(location):
    gallery = Gallery(location)
    errors = []

    def writer(index):
        try:
            for round_ in range(5):
                gallery.add_samples(f"t{index}", _descriptors(1, index * 10 + round_, index),
                                    force=True)
                gallery.people()
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert gallery.people() == [(f"t{i}", 5) for i in range(4)]
    assert gallery.change_token() == 20
    gallery.close()
    with pytest.raises(GalleryError, match="closed"):
        gallery.people()


WRITER = """
    import sys, time
    import numpy as np
    from facerec_server.core.gallery import Gallery
    gallery = Gallery(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(int(sys.argv[2])):
        gallery.add_samples("w%d" % (i % 3), np.full((2, 128), i, np.float32), force=True)
        time.sleep(0.005)
    print("done", flush=True)
"""


def test_other_process_writes_while_this_one_reads(path):
    gallery = Gallery(path)
    gallery.add_samples("reader", _descriptors(1, 1, -5.0))
    matcher = Matcher(0.6)
    sync = GalleryMatcherSync(gallery, matcher, min_interval=0.0)
    assert sync.refresh() is True and len(matcher) == 1
    assert sync.refresh() is False  # nothing changed
    token = gallery.change_token()
    child = _child(WRITER, path, 60, stdin=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == "ready"
        child.stdin.write("go\n")
        child.stdin.flush()
        reads = 0
        while child.poll() is None:
            names, matrix = gallery.matrix()
            counts = dict(gallery.people())
            # every read is a consistent snapshot of whole transactions (2 samples each)
            assert len(names) == matrix.shape[0]
            assert (len(names) - 1) % 2 == 0
            assert all(counts.get(n, 0) >= 1 for n in set(names))
            sync.refresh()
            reads += 1
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert out.strip() == "done"
    assert reads > 0
    assert gallery.change_token() == token + 60
    sync.refresh()  # the loop's last refresh may already have seen the final state
    assert len(matcher) == 121
    assert sync.refresh() is False
    assert gallery.people() == [("reader", 1), ("w0", 40), ("w1", 40), ("w2", 40)]
    gallery.close()


def test_change_token_sees_other_process(location):
    with Gallery(location) as gallery:
        first = gallery.change_token()
        child = _child("""
            import sys
            import numpy as np
            from facerec_server.core.gallery import Gallery
            with Gallery(sys.argv[1]) as gallery:
                gallery.add_samples("other", np.ones((1, 128), np.float32))
        """, location)
        _, err = child.communicate(timeout=30)
        assert child.returncode == 0, err
        second = gallery.change_token()
        assert second != first
        child = _child("""
            import sys
            from facerec_server.core.gallery import Gallery
            with Gallery(sys.argv[1]) as gallery:
                assert gallery.forget("other") == 1
        """, location)
        _, err = child.communicate(timeout=30)
        assert child.returncode == 0, err
        assert gallery.change_token() not in (first, second)
        assert gallery.people() == []


def test_matcher_sync_rate_limit(path):
    now = [0.0]
    with Gallery(path) as gallery:
        matcher = Matcher(0.6)
        sync = GalleryMatcherSync(gallery, matcher, min_interval=1.0, clock=lambda: now[0])
        assert sync.refresh()
        gallery.add_samples("alice", _descriptors(1, 1))
        assert not sync.refresh()  # checked less than 1 s ago
        now[0] = 1.5
        assert sync.refresh() and matcher.names == ("alice",)
        gallery.forget("alice")
        assert sync.refresh(force=True) and len(matcher) == 0


# --- issue 21: rows and meta written by another program (both backends) ------------------------

def _raw(location, statement, params=()):
    """Run ``statement`` on the gallery's tables as another program would (sqlite3, or
    psycopg on the facerec schema), bypassing every check of the Gallery API."""
    if str(location).startswith("postgresql://"):
        import psycopg
        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute("SET search_path TO facerec")
            conn.execute(statement.replace("?", "%s"), params)
        return
    with sqlite3.connect(location) as db:
        db.execute(statement, params)


def _bad_row(location, name, blob):
    """A person ``name`` with one sample whose descriptor bytes are ``blob``."""
    _raw(location, "INSERT INTO people (name, created_at) VALUES (?, 0)", (name,))
    _raw(location, "INSERT INTO samples (person_id, descriptor, created_at, source) "
                   "SELECT id, ?, 0, 'other program' FROM people WHERE name = ?", (blob, name))


def test_rows_a_matcher_cannot_use_are_skipped_with_the_file_named(location, caplog):
    """Issue 21 item 9 and 14: a sample with a NaN descriptor (19 of 20 frames gave no
    FaceArray) and a person with an empty name (a raw traceback) are skipped with one
    warning naming the gallery; the other samples are matched."""
    good = _descriptors(2, 1)
    nan = np.full(128, np.nan, np.float32).astype("<f4").tobytes()
    with Gallery(location) as gallery:
        gallery.add_samples("alice", good)
        _bad_row(location, "mallory", nan)
        _bad_row(location, "", _descriptors(1, 2, 1.0).astype("<f4").tobytes())
        matcher = Matcher(0.6)
        sync = GalleryMatcherSync(gallery, matcher)
        with caplog.at_level("WARNING", logger="facerec_server.gallery"):
            assert sync.refresh(force=True)
        assert matcher.names == ("alice", "alice")
        assert matcher.match(good[:1])[0].name == "alice"
        names, matrix = gallery.matrix()
        assert names == ["alice", "alice"] and np.isfinite(matrix).all()
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1, warnings
        assert gallery.path in warnings[0]
        assert "'mallory'" in warnings[0] and "NaN" in warnings[0]
        assert "empty name" in warnings[0]
        # the refusal is once per change, not once per read
        caplog.clear()
        with caplog.at_level("WARNING", logger="facerec_server.gallery"):
            gallery.snapshot()
            gallery.snapshot()
        assert caplog.records == []
        # a new enrollment is still checked against the usable samples only
        gallery.add_samples("bob", _descriptors(1, 3, 2.0))
        assert [n for n, _ in gallery.people()] == ["", "alice", "bob", "mallory"]


@pytest.mark.parametrize("statement, words", [
    ("DELETE FROM meta WHERE key = 'generation'", ["no 'generation' row"]),
    ("UPDATE meta SET value = 'seven' WHERE key = 'generation'", ["'seven'", "not an integer"]),
])
def test_meta_without_a_usable_generation_is_refused(location, statement, words):
    """Issue 21 item 14: a gallery without its generation row, or with a non-integer one,
    gave a raw traceback; now a GalleryError naming the gallery and what to do."""
    Gallery(location).close()
    _raw(location, statement)
    with pytest.raises(GalleryError) as refused:
        Gallery(location)
    message = str(refused.value)
    assert "\n" not in message
    assert (location.split("?")[0] if location.startswith("postgresql") else location) \
        in message or "postgresql://" in message
    for word in words:
        assert word in message


def test_generation_broken_while_open_keeps_the_last_gallery(location, caplog):
    """Another program breaks the generation row while a server runs: polled refreshes
    keep the matcher's gallery (recognition goes on) and say why once."""
    with Gallery(location) as gallery:
        gallery.add_samples("alice", _descriptors(1, 1))
        matcher = Matcher(0.6)
        now = [0.0]
        sync = GalleryMatcherSync(gallery, matcher, min_interval=0.0, clock=lambda: now[0])
        sync.refresh(force=True)
        _raw(location, "UPDATE meta SET value = 'x' WHERE key = 'generation'")
        with caplog.at_level("WARNING", logger="facerec_server.gallery"):
            for tick in range(1, 4):
                now[0] = float(tick)
                assert sync.refresh() is False
        assert matcher.names == ("alice",)
        if not sync.pushed:
            messages = [r.getMessage() for r in caplog.records]
            assert len(messages) == 1 and "generation" in messages[0], messages


def test_damaged_gallery_file_is_a_gallery_error(tmp_path):
    """Found by test_fuzz (gallery readers): bytes of the file overwritten (here in the
    schema page) made SQLite report an error whose text is not UTF-8, and opening the
    gallery raised UnicodeDecodeError instead of a GalleryError naming the file."""
    path = str(tmp_path / "gallery.db")
    with Gallery(path) as gallery:
        gallery.add_samples("alice", _descriptors(1, 1))
    with open(path, "r+b") as handle:
        for offset, data in ((3547, b"\xe4\xdb\xc4\xbd"), (524, b"\x7f"), (296, b"]\xdf")):
            handle.seek(offset)
            handle.write(data)
    for _ in range(2):  # the first open and the next (SQLite may have rolled a journal back)
        with pytest.raises(GalleryError) as refused:
            with Gallery(path) as gallery:
                gallery.snapshot()
        assert path in str(refused.value) and "\n" not in str(refused.value)
