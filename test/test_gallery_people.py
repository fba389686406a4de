"""Gallery schema v2 on both backends: the v1 -> v2 migration, anonymous identities, naming and
corrections (each one transaction), negative examples, sightings, and their bounds.

``test/data/gallery_v1.db`` was written by facerec's main branch before schema v2 (commit
064288e, ``Gallery.add_samples``; ``gallery_v1.json`` is its export then): the migration must
open it and lose nothing.
"""
import os
import shutil
import sqlite3

import numpy as np
import pytest

from facerec_server.core.gallery import (SCHEMA_VERSION, EnrollmentError, Gallery,
                                         GalleryMatcherSync, Sample)
from facerec_server.core.gallery import sql
from facerec_server.core.match import Matcher

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _descriptors(count, seed, offset=0.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(scale=0.02, size=(count, 128)) + offset).astype(np.float32)


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "gallery.db")
    return request.getfixturevalue("pg_url")


def _content(gallery):
    """Everything of the v1 export that must survive (descriptors included)."""
    data = gallery.export()
    return [(p["name"], p["created_at"], [(s["id"], s["created_at"], s["source"], s["score"],
                                           s["descriptor"]) for s in p["samples"]])
            for p in data["people"]]


# --- migration ---------------------------------------------------------------------------
def test_v1_file_made_by_main_migrates_and_loses_nothing(tmp_path):
    import json
    path = str(tmp_path / "gallery.db")
    shutil.copy(os.path.join(DATA, "gallery_v1.db"), path)
    with open(os.path.join(DATA, "gallery_v1.json")) as handle:
        before = json.load(handle)
    assert before["schema_version"] == 1
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    chips_before = conn.execute("SELECT id, chip FROM samples ORDER BY id").fetchall()
    conn.close()
    with Gallery(path) as gallery:
        expected = [(p["name"], p["created_at"], [
            (s["id"], s["created_at"], s["source"], s["score"], s["descriptor"])
            for s in p["samples"]]) for p in before["people"]]
        assert _content(gallery) == expected
        # a v1 person named like an anonymous identity stays a known person, and the ids of
        # new anonymous identities start above it
        assert dict(gallery.people()) == {"alice": 2, "bob": 3, "unknown-5": 1}
        assert gallery.anonymous() == []
        assert gallery.add_anonymous(_descriptors(1, 9)) == "unknown-6"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert conn.execute("SELECT id, chip FROM samples WHERE id <= ? ORDER BY id",
                        (len(chips_before),)).fetchall() == chips_before
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with Gallery(path) as again:  # opening a migrated gallery changes nothing more
        token = again.change_token()
    with Gallery(path) as again:
        assert again.change_token() == token


def test_v1_migration_is_one_transaction(tmp_path, monkeypatch):
    """A migration that fails half-way leaves the v1 gallery as it was."""
    path = str(tmp_path / "gallery.db")
    shutil.copy(os.path.join(DATA, "gallery_v1.db"), path)
    broken = dict(sql.SQLITE_MIGRATIONS)
    broken[2] = sql.SQLITE_MIGRATIONS[2][:3] + ("CREATE TABLE broken (",)
    monkeypatch.setattr(sql, "SQLITE_MIGRATIONS", broken)
    with pytest.raises(Exception):
        Gallery(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    columns = [row[1] for row in conn.execute("PRAGMA table_info(people)")]
    assert "anonymous" not in columns
    conn.close()
    monkeypatch.undo()
    with Gallery(path) as gallery:  # and migrates when the code is right
        assert dict(gallery.people()) == {"alice": 2, "bob": 3, "unknown-5": 1}


def test_v1_postgres_database_migrates(postgres_server):
    """A v1 database, built with the v1 statements main's code ran, migrates on open."""
    import psycopg
    url = postgres_server.new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("BEGIN")
        for statement in sql.POSTGRES_SCHEMA:
            conn.execute(statement)
        conn.execute("SET search_path TO facerec")
        for key, value in (("format", "facerec-gallery"), ("schema_version", "1"),
                           ("created_at", "1.0"), ("generation", "4")):
            conn.execute("INSERT INTO meta (key, value) VALUES (%s, %s)", (key, value))
        for name in ("alice", "unknown-9"):
            conn.execute("INSERT INTO people (name, created_at) VALUES (%s, 2.0)", (name,))
        for person, seed in ((1, 1), (1, 2), (2, 3)):
            conn.execute("INSERT INTO samples (person_id, descriptor, created_at, source) "
                         "VALUES (%s, %s, 3.0, 'cli:x')",
                         (person, _descriptors(1, seed)[0].astype("<f4").tobytes()))
        conn.execute("COMMIT")
    with Gallery(url) as gallery:
        assert gallery.people() == [("alice", 2), ("unknown-9", 1)]
        names, matrix = gallery.matrix()
        assert names == ["alice", "alice", "unknown-9"]
        assert np.array_equal(matrix[2], _descriptors(1, 3)[0])
        assert gallery.change_token() == 5  # the migration is a change
        assert gallery.add_anonymous(_descriptors(1, 4)) == "unknown-10"
    with psycopg.connect(url) as conn:
        version = conn.execute("SELECT value FROM facerec.meta WHERE key = 'schema_version'")
        assert version.fetchone()[0] == str(SCHEMA_VERSION)


# --- operations (both backends) ---------------------------------------------------------------
def test_anonymous_identities_naming_and_corrections(location):
    with Gallery(location) as gallery:
        gallery.add_samples("alice", _descriptors(2, 1, 0.5))
        first = gallery.add_anonymous(_descriptors(3, 2, -0.5), seen_at=100.0)
        second = gallery.add_anonymous(_descriptors(2, 3, 0.2))
        assert (first, second) == ("unknown-1", "unknown-2")
        assert gallery.people() == [("alice", 2)]  # anonymous identities are not people
        assert [(a["name"], a["samples"], a["last_seen"]) for a in gallery.anonymous()][0] \
            == ("unknown-1", 3, 100.0)
        snapshot = gallery.snapshot_all()
        assert snapshot.known[0] == ["alice", "alice"]
        assert snapshot.anonymous[0] == ["unknown-1"] * 3 + ["unknown-2"] * 2
        # naming: a new person, then into an existing one
        assert gallery.name_anonymous("unknown-1", "bob") == (3, False)
        assert gallery.name_anonymous("unknown-2", "alice") == (4, True)
        assert gallery.people() == [("alice", 4), ("bob", 3)] and gallery.anonymous() == []
        # ids are never reused
        assert gallery.add_anonymous(_descriptors(1, 4)) == "unknown-3"
        with pytest.raises(EnrollmentError, match="known person"):
            gallery.name_anonymous("alice", "carol")
        with pytest.raises(EnrollmentError, match="form of an anonymous"):
            gallery.name_anonymous("unknown-3", "unknown-4")
        with pytest.raises(EnrollmentError, match="no anonymous identity"):
            gallery.name_anonymous("unknown-1", "carol")
        # rename, merge, remove one sample
        assert gallery.rename("bob", "Robert") == 3
        with pytest.raises(EnrollmentError, match="already in the gallery"):
            gallery.rename("Robert", "alice")
        assert gallery.merge("Robert", "alice") == 7
        assert gallery.people() == [("alice", 7)]
        ids = [s["id"] for s in gallery.samples("alice")]
        assert len(ids) == 7
        assert gallery.remove_sample(ids[0]) == "alice"
        assert [s["id"] for s in gallery.samples("alice")] == ids[1:]
        with pytest.raises(EnrollmentError, match="no sample with id"):
            gallery.remove_sample(ids[0])
        # negative examples
        assert gallery.add_negatives("alice", _descriptors(2, 5, -0.5)) == 2
        assert gallery.snapshot_all().negatives[0] == ["alice", "alice"]
        token = gallery.change_token()
        with pytest.raises(EnrollmentError):
            gallery.merge("alice", "nobody")
        assert gallery.change_token() == token  # a refused change writes nothing


def test_sightings_and_bounds(location):
    with Gallery(location) as gallery:
        gallery.add_samples("alice", _descriptors(1, 1, 0.5))
        ids = [gallery.add_anonymous(_descriptors(1, seed), seen_at=1000.0 + seed,
                                     max_identities=3) for seed in range(5)]
        # at most 3: the least recently seen went first
        assert [a["name"] for a in gallery.anonymous()] == ids[2:]
        assert gallery.add_anonymous_samples(ids[2], _descriptors(6, 9), max_samples=4,
                                             seen_at=1002.0) == 4
        kept = gallery.samples(ids[2])
        assert len(kept) == 4  # the oldest went
        gallery.record_sightings([("alice", "/cam1", 10.0, 20.0, 1),
                                  ("alice", "/cam1", 5.0, 15.0, 2),
                                  (ids[3], "/cam2", 30.0, 31.0, 1),
                                  ("nobody", "/cam1", 1.0, 2.0, 1)])
        rows = gallery.sightings()
        assert [(r["name"], r["input"], r["first_seen"], r["last_seen"], r["count"],
                 r["anonymous"]) for r in rows] == [
            (ids[3], "/cam2", 30.0, 31.0, 1, True), ("alice", "/cam1", 5.0, 20.0, 3, False)]
        assert gallery.sightings("alice", "/cam2") == []
        # merge moves sightings; max_rows keeps the most recent; retention drops identities
        gallery.merge(ids[3], "alice")
        assert [(r["input"], r["count"]) for r in gallery.sightings("alice")] == [
            ("/cam2", 1), ("/cam1", 3)]
        removed = gallery.record_sightings([("alice", "/cam3", 50.0, 60.0, 1)], max_rows=2,
                                           retention=100.0, now=1103.5)
        assert [r["input"] for r in gallery.sightings()] == ["/cam3", "/cam2"]
        assert removed == [ids[2]]  # last seen 1002 < 1103.5 - 100; ids[4] (1004) stays
        assert [a["name"] for a in gallery.anonymous()] == [ids[4]]


def test_matcher_sync_keeps_known_anonymous_and_negatives_apart(location):
    with Gallery(location) as gallery:
        gallery.add_samples("alice", _descriptors(2, 1, 0.5))
        gallery.add_anonymous(_descriptors(2, 2, -0.5))
        known, anonymous = Matcher(0.6), Matcher(0.5)
        sync = GalleryMatcherSync(gallery, known, anonymous=anonymous)
        sync.refresh(force=True)
        assert known.names == ("alice", "alice")
        assert anonymous.names == ("unknown-1", "unknown-1")
        face = _descriptors(1, 7, 0.5)[0]
        assert known.match(face)[0].name == "alice"
        gallery.add_negatives("alice", [face])
        sync.refresh(force=True)
        assert known.match(face)[0].name == ""  # "this face is not alice" from now on


def test_negative_example_hands_the_face_to_the_next_person():
    matcher = Matcher(0.6)
    alice, bob = _descriptors(2, 1, 0.1), _descriptors(2, 2, 0.12)
    face = _descriptors(1, 3, 0.105)[0]
    matcher.set_gallery(["alice"] * 2 + ["bob"] * 2, np.vstack([alice, bob]))
    assert matcher.match(face)[0].name == "alice"
    matcher.set_gallery(["alice"] * 2 + ["bob"] * 2, np.vstack([alice, bob]),
                        negatives=(["alice"], face[None, :]))
    found = matcher.match(face)[0]
    assert found.name == "bob" and found.distance < 0.6
    far = _descriptors(1, 4, -0.3)[0]  # nowhere near the negative example: still alice
    matcher.set_gallery(["alice"] * 2, alice, negatives=(["alice"], face[None, :]))
    assert matcher.match(alice[0] + 0.001)[0].name == "alice"
    assert matcher.match(far)[0].name == ""


def test_add_samples_refuses_reserved_names(location):
    with Gallery(location) as gallery:
        with pytest.raises(EnrollmentError, match="anonymous identity"):
            gallery.add_samples("unknown-3", [Sample(_descriptors(1, 1)[0])])
        assert gallery.people() == [] and gallery.change_token() == 0
