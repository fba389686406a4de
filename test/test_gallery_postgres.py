"""The PostgreSQL gallery backend on a real PostgreSQL server (see pgutil.py).

What only this backend has: a database that is identified and versioned like the SQLite
file, changes pushed to readers by LISTEN/NOTIFY, writers serialised across connections,
and connection loss (clear errors, the last gallery kept, reconnection with back-off).
The operations themselves run on both backends in test_gallery.py and test_gallery_crash.py.
"""
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from facerec_server.core.gallery import (SCHEMA_VERSION, ConflictError, Gallery, GalleryError,
                                         GalleryMatcherSync, GalleryUnavailable)
from facerec_server.core.gallery.postgres import PostgresGallery, redact
from facerec_server.core.match import Matcher

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _descriptors(count, seed, offset=0.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(scale=0.02, size=(count, 128)) + offset).astype(np.float32)


def _sql(url, statement, params=None):
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else None


def _wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_location_selects_the_backend_and_schema_is_identified(pg_url):
    with Gallery(pg_url) as gallery:
        assert isinstance(gallery, PostgresGallery)
        assert gallery.path == pg_url  # no password to hide here
    meta = dict(_sql(pg_url, "SELECT key, value FROM facerec.meta"))
    assert meta["format"] == "facerec-gallery"
    assert meta["schema_version"] == str(SCHEMA_VERSION) and meta["generation"] == "0"
    tables = {row[0] for row in _sql(
        pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'facerec'")}
    assert tables == {"people", "samples", "meta", "negatives", "sightings"}
    with Gallery(pg_url) as again:  # opening an existing gallery changes nothing
        assert again.people() == [] and again.change_token() == 0


def test_servers_starting_together_create_one_schema(pg_url):
    errors, galleries = [], []
    barrier = threading.Barrier(4)

    def open_it():
        try:
            barrier.wait()
            galleries.append(Gallery(pg_url))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(galleries) == 4
    for gallery in galleries:
        gallery.close()
    assert _sql(pg_url, "SELECT count(*) FROM facerec.meta WHERE key = 'format'") == [(1,)]


@pytest.mark.parametrize("version, word", [(SCHEMA_VERSION + 1, "newer"),
                                           (0, "older")])  # 1 migrates (test_gallery_people)
def test_other_schema_version_refused_untouched(pg_url, version, word):
    with Gallery(pg_url) as gallery:
        gallery.add_samples("alice", _descriptors(1, 1))
    _sql(pg_url, "UPDATE facerec.meta SET value = %s WHERE key = 'schema_version'",
         (str(version),))
    before = _sql(pg_url, "SELECT key, value FROM facerec.meta ORDER BY key")
    with pytest.raises(GalleryError, match=f"schema version {version}, {word}"):
        Gallery(pg_url)
    assert _sql(pg_url, "SELECT key, value FROM facerec.meta ORDER BY key") == before
    assert _sql(pg_url, "SELECT count(*) FROM facerec.samples") == [(1,)]


def test_foreign_schema_refused_untouched(pg_url):
    _sql(pg_url, "CREATE SCHEMA facerec")
    _sql(pg_url, "CREATE TABLE facerec.people (name text)")
    _sql(pg_url, "INSERT INTO facerec.people VALUES ('x')")
    with pytest.raises(GalleryError, match="not a facerec gallery.*left untouched"):
        Gallery(pg_url)
    assert _sql(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'facerec'") == \
        [("people",)]
    assert _sql(pg_url, "SELECT name FROM facerec.people") == [("x",)]


def test_unreachable_or_bad_url_is_one_clear_line_without_the_password(tmp_path):
    url = f"postgresql://facerec:s3cret@/nowhere?host={tmp_path}&connect_timeout=2"
    with pytest.raises(GalleryError) as info:
        Gallery(url)
    message = str(info.value)
    assert "cannot connect to the gallery database" in message and "\n" not in message
    assert "s3cret" not in message and "facerec:***@" in message
    with pytest.raises(GalleryError, match="cannot connect"):
        Gallery("postgresql://host:notaport/db")
    assert "s3cret" not in redact("postgresql://u@h/db?password=s3cret&sslmode=require")


def test_writers_on_two_connections_are_serialised(pg_url):
    """The conflict check of each change sees every change committed before it."""
    first, second = Gallery(pg_url), Gallery(pg_url)
    try:
        for round_ in range(6):
            face = _descriptors(1, round_, offset=round_ * 3.0)
            barrier = threading.Barrier(2)
            outcomes = []

            def enroll(gallery, name, descriptor):
                barrier.wait()
                try:
                    outcomes.append(gallery.add_samples(name, descriptor))
                except ConflictError as error:
                    outcomes.append(error)

            threads = [threading.Thread(target=enroll, args=(g, f"{who}{round_}", face + d))
                       for g, who, d in ((first, "a", 0.0), (second, "b", 0.001))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(type(o).__name__ for o in outcomes) == ["ConflictError", "int"]
        assert first.change_token() == 6
    finally:
        first.close()
        second.close()


WRITER = """
    import sys, time
    import numpy as np
    from facerec_server.core.gallery import Gallery
    with Gallery(sys.argv[1]) as gallery:
        for i in range(int(sys.argv[2])):
            gallery.add_samples("w%d" % i, np.full((1, 128), 5.0 * i + 10, np.float32))
            print(repr(time.time()), flush=True)
            time.sleep(0.3)
"""


def test_changes_by_another_process_are_pushed_within_one_second(pg_url):
    """No refresh() call at all: the watch's LISTEN connection reloads the matcher."""
    gallery = Gallery(pg_url)
    matcher = Matcher(0.6)
    sync = GalleryMatcherSync(gallery, matcher)
    try:
        assert sync.pushed and sync.refresh() is False  # free: never a query per frame
        assert _wait(lambda: sync.connected, 10)
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), pg_url, "5"],
                                 env=env, stdout=subprocess.PIPE, text=True)
        delays = []
        for expected in range(1, 6):
            committed = float(child.stdout.readline())
            assert _wait(lambda: len(matcher) == expected, 5.0), f"change {expected} not seen"
            delays.append(time.time() - committed)
        assert child.wait(timeout=30) == 0
        print(f"push delays (s): {[round(d, 3) for d in delays]}")
        assert max(delays) < 1.0  # the contract: used by every server within 1 s
        assert matcher.names == tuple(f"w{i}" for i in range(5))
    finally:
        gallery.close()
    assert not sync.connected


@pytest.fixture
def own_server():
    """A PostgreSQL server of this test alone (it is stopped and restarted)."""
    from pgutil import server_or_skip
    server = server_or_skip()
    yield server
    server.cleanup()


def test_database_restart_keeps_the_gallery_and_reconnects(own_server):
    url = own_server.new_database()
    gallery = Gallery(url)
    matcher = Matcher(0.6)
    sync = GalleryMatcherSync(gallery, matcher)
    try:
        gallery.add_samples("alice", _descriptors(2, 1))
        assert _wait(lambda: len(matcher) == 2 and sync.connected, 10)
        own_server.stop()
        assert _wait(lambda: not sync.connected, 10)
        # recognition goes on with the gallery it had; asking costs nothing
        assert sync.refresh() is False and matcher.names == ("alice", "alice")
        assert matcher.match(_descriptors(1, 1))[0].name == "alice"
        # changes fail at once, saying so (twice: the second is inside the back-off)
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(GalleryUnavailable) as info:
                gallery.add_samples("bob", _descriptors(1, 2, 1.0))
            assert time.monotonic() - started < 10
            message = str(info.value)
            assert "unreachable" in message and "nothing was" in message \
                and "reconnects" in message and "\n" not in message
        with pytest.raises(GalleryUnavailable):
            gallery.people()
        own_server.start()
        assert _wait(lambda: sync.connected, 30), "the watch did not reconnect"
        assert _wait(lambda: _try_add(gallery, "bob", _descriptors(1, 2, 1.0)), 30)
        assert _wait(lambda: len(matcher) == 3, 5)  # pushed again after the reconnection
        assert gallery.people() == [("alice", 2), ("bob", 1)]
    finally:
        gallery.close()


def _try_add(gallery, name, descriptors):
    try:
        return gallery.add_samples(name, descriptors) > 0
    except GalleryUnavailable:
        return False


def test_first_change_after_a_restart_works_on_a_fresh_connection(own_server):
    """A connection that went stale while idle is replaced before the change, not reported."""
    url = own_server.new_database()
    with Gallery(url) as gallery:
        gallery.add_samples("alice", _descriptors(1, 1))
        own_server.stop()
        own_server.start()  # nothing used the gallery meanwhile: its connection is stale
        assert gallery.add_samples("bob", _descriptors(1, 2, 1.0)) == 1
        assert gallery.people() == [("alice", 1), ("bob", 1)]


@pytest.fixture
def two_hosts():
    """PostgreSQL on one "host", a client on another: two network namespaces joined by a veth
    pair (192.0.2.11 database, 192.0.2.12 client; nothing in the root namespace). Yields
    (server, client namespace, the client's interface)."""
    import shutil
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (ip netns) to make two network hosts")
    from pgutil import server_or_skip
    tag = f"{os.getpid() % 100000}"
    db_ns, client_ns = f"facerec-pg-db-{tag}", f"facerec-pg-cl-{tag}"
    db_if, client_if = f"fpgd{tag}", f"fpgc{tag}"
    steps = [["ip", "netns", "add", db_ns], ["ip", "netns", "add", client_ns],
             ["ip", "link", "add", db_if, "netns", db_ns, "type", "veth",
              "peer", "name", client_if, "netns", client_ns],
             ["ip", "-n", db_ns, "addr", "add", "192.0.2.11/24", "dev", db_if],
             ["ip", "-n", client_ns, "addr", "add", "192.0.2.12/24", "dev", client_if]]
    steps += [["ip", "-n", ns, "link", "set", dev, "up"]
              for ns, dev in ((db_ns, db_if), (db_ns, "lo"), (client_ns, client_if),
                              (client_ns, "lo"))]
    server = None
    try:
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot make network namespaces here: {' '.join(step)}: "
                            f"{done.stderr.strip()}")
        server = server_or_skip(netns=db_ns, host="192.0.2.11")
        yield server, client_ns, client_if
    finally:
        if server is not None:
            server.cleanup()
        for ns in (client_ns, db_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


CLIENT = """
    import sys, time
    import numpy as np
    from facerec_server.core.gallery import Gallery, GalleryMatcherSync, GalleryUnavailable
    from facerec_server.core.match import Matcher

    def wait(predicate, timeout):  # evaluates predicate until true (at most once after)
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                return False
            time.sleep(0.01)
        return True

    def say(*words):
        print(*words, flush=True)

    def add(gallery, name, value):
        try:
            return gallery.add_samples(name, np.full((1, 128), value, np.float32)) > 0
        except GalleryUnavailable as error:
            return str(error)

    gallery, writer = Gallery(sys.argv[1]), Gallery(sys.argv[1])
    matcher = Matcher(0.6)
    sync = GalleryMatcherSync(gallery, matcher)
    say("connected", wait(lambda: sync.connected, 10))
    writer.add_samples("alice", np.zeros((1, 128), np.float32))
    say("pushed", wait(lambda: len(matcher) == 1, 1.0))
    sys.stdin.readline()  # the link is down now
    started = time.monotonic()
    outcome = add(gallery, "bob", 1.0)
    say("change", "%.1f" % (time.monotonic() - started), str(outcome).replace(" ", "_")[:200])
    say("noticed", wait(lambda: not sync.connected, 60), "%.1f" % (time.monotonic() - started),
        matcher.names == ("alice",))
    sys.stdin.readline()  # the link is up again
    say("reconnected", wait(lambda: sync.connected, 60))
    say("changed", wait(lambda: add(gallery, "bob", 1.0) is True, 30))
    say("pushed", wait(lambda: len(matcher) == 2, 5))
    gallery.close()
    writer.close()
"""


def test_database_on_another_host_over_tcp_survives_a_dead_link(two_hosts):
    """Pushed changes over TCP between two hosts; a link that dies silently (no FIN, no
    RST) is noticed: a change fails within seconds instead of hanging, the last gallery is
    kept, and everything resumes with the link."""
    server, client_ns, client_if = two_hosts
    server.new_database()  # over the Unix socket; the client uses TCP
    url = f"postgresql://postgres@192.0.2.11:5432/gallery{server._databases}"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen(["ip", "netns", "exec", client_ns, sys.executable, "-c",
                              textwrap.dedent(CLIENT), url], env=env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert child.stdout.readline().split() == ["connected", "True"], child.stderr.read()
        assert child.stdout.readline().split() == ["pushed", "True"]
        subprocess.run(["ip", "-n", client_ns, "link", "set", client_if, "down"], check=True)
        child.stdin.write("down\n")
        child.stdin.flush()
        word, seconds, outcome = child.stdout.readline().split()
        assert word == "change" and "unreachable" in outcome, outcome
        assert float(seconds) < 30, f"a change on a dead link took {seconds} s to fail"
        word, noticed, after, kept = child.stdout.readline().split()
        assert (word, noticed, kept) == ("noticed", "True", "True"), (noticed, after)
        subprocess.run(["ip", "-n", client_ns, "link", "set", client_if, "up"], check=True)
        child.stdin.write("up\n")
        child.stdin.flush()
        assert child.stdout.readline().split() == ["reconnected", "True"]
        assert child.stdout.readline().split() == ["changed", "True"]
        assert child.stdout.readline().split() == ["pushed", "True"]
        print(f"dead link: the change failed after {seconds} s, the watch noticed after "
              f"{after} s")
        assert child.wait(timeout=30) == 0, child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
