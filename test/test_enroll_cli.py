"""facerec-enroll as a subprocess (python -m facerec_server.enroll_cli) with real models."""
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest

from conftest import astronaut_path, messi_path
from jpeg_bombs import bomb

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(gallery, *args, timeout=120, cwd=None):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "facerec_server.enroll_cli",
                           "--gallery", str(gallery)] + [str(a) for a in args],
                          env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          preexec_fn=_memory_cap)
    return done.returncode, done.stdout, done.stderr


def _memory_cap():
    """At most 6 GB of address space: a CLI reading without bound fails instead of taking
    the machine's memory (issue 21: `add alice /dev/zero` grew to 5.6 GB in 8 s)."""
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


@pytest.fixture
def photos(tmp_path, astronaut):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(astronaut_path(), folder / "astronaut.png")
    cv2.imwrite(str(folder / "mirror.jpg"), np.ascontiguousarray(astronaut[:, ::-1]))
    shutil.copy(messi_path(), folder / "messi.jpg")
    cv2.imwrite(str(folder / "blank.png"), np.full((100, 100, 3), 90, np.uint8))
    return folder


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    """--gallery value: an SQLite file, or a new database on a real PostgreSQL server."""
    if request.param == "sqlite":
        return tmp_path / "g" / "gallery.db"
    return request.getfixturevalue("pg_url")


def test_add_list_export_forget(location, tmp_path, photos):
    gallery = location
    code, out, err = run(gallery, "add", "alice", photos / "astronaut.png",
                         photos / "mirror.jpg", photos / "blank.png", "--progress")
    assert code == 0, err
    assert "enrolled 2 samples for 'alice'" in out and "1 no face" in out
    assert "blank.png: no face" in err  # per-image report
    assert "] 3/3 blank.png" in err  # progress bar
    code, out, err = run(gallery, "list")
    assert code == 0 and out == "alice\t2\n"
    assert json.loads(run(gallery, "list", "--json")[1]) == {"names": ["alice"],
                                                             "samples": [2]}
    code, out, err = run(gallery, "export")
    assert code == 0, err
    exported = json.loads(out)
    samples = exported["people"][0]["samples"]
    assert exported["people"][0]["name"] == "alice" and len(samples) == 2
    assert len(samples[0]["descriptor"]) == 128
    assert samples[0]["source"] == "cli:" + str(photos / "astronaut.png")
    target = tmp_path / "export.json"
    code, out, err = run(gallery, "export", "--output", target, "--no-descriptors")
    assert code == 0 and out == "" and "wrote 1 people, 2 samples" in err
    assert "descriptor" not in json.loads(target.read_text())["people"][0]["samples"][0]
    code, out, err = run(gallery, "forget", "alice")
    assert code == 0 and "removed 'alice' (2 samples)" in out
    code, out, err = run(gallery, "forget", "alice")
    assert code == 1 and "no person named 'alice'" in err
    assert run(gallery, "list")[:2] == (0, "")


def test_failures_exit_non_zero(tmp_path, photos):
    gallery = tmp_path / "gallery.db"
    code, out, err = run(gallery, "add", "nobody", photos / "blank.png", photos / "messi.jpg",
                         tmp_path / "missing.jpg")
    assert code == 1 and out == ""
    assert "no usable face" in err and "messi.jpg: too small" in err
    assert "missing.jpg: cannot read" in err
    code, out, err = run(gallery, "add", "bad\tname", photos / "astronaut.png")
    assert code == 1 and "control character" in err
    assert run(gallery, "add", "alice", photos / "astronaut.png")[0] == 0
    code, out, err = run(gallery, "add", "bob", photos / "mirror.jpg")
    assert code == 1 and "looks like 'alice'" in err and "force" in err
    assert run(gallery, "list")[1] == "alice\t1\n"
    code, out, err = run(gallery, "add", "bob", photos / "mirror.jpg", "--force",
                         "--upsample", "0")
    assert code == 0, err
    assert run(gallery, "list")[1] == "alice\t1\nbob\t1\n"
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not a gallery\n" * 20)
    code, out, err = run(foreign, "list")
    assert code == 1 and "not a facerec gallery" in err
    assert foreign.read_text() == "not a gallery\n" * 20
    assert run(gallery)[0] == 2  # no command: usage error


def test_add_folder_and_import_reference(location, tmp_path, photos):
    people = tmp_path / "people"
    for name, files in {"alice": ["astronaut.png", "mirror.jpg"], "messi": ["messi.jpg"],
                        "empty": []}.items():
        (people / name).mkdir(parents=True)
        for file in files:
            shutil.copy(photos / file, people / name / file)
    (people / "notes.txt").write_text("ignored")
    gallery = location
    code, out, err = run(gallery, "add-folder", people, "--min-face-size", "30")
    assert code == 1  # 'empty' has no photos
    assert "empty: no .jpg/.jpeg/.png photos" in err and "2 of 3 people enrolled" in err
    assert "enrolled 2 samples for 'alice'" in out and "enrolled 1 sample for 'messi'" in out
    assert run(gallery, "list")[1] == "alice\t2\nmessi\t1\n"

    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps([{"tag": "eileen", "photos": ["photos/astronaut.png"]},
                                     {"tag": "ghost", "photos": "photos/nope.jpg"}]))
    code, out, err = run(gallery, "import-reference", reference, "--force")
    assert code == 1, err  # ghost's photo is missing
    assert "imported photos/astronaut.png as 'eileen'" in out
    assert "skipped photos/nope.jpg ('ghost'): cannot read" in err
    assert run(gallery, "list")[1] == "alice\t2\neileen\t1\nmessi\t1\n"


def test_unreachable_database_is_a_clear_error(tmp_path):
    code, out, err = run(f"postgresql://facerec:s3cret@/facerec?host={tmp_path}", "list")
    assert code == 1 and out == ""
    assert err.startswith("facerec-enroll: error: cannot connect to the gallery database")
    assert err.count("\n") == 1 and "s3cret" not in err


def test_cli_does_not_import_rclpy(tmp_path):
    code = ("import sys; from facerec_server import enroll_cli; "
            f"assert enroll_cli.main(['--gallery', {str(tmp_path / 'g.db')!r}, 'list']) == 0; "
            "assert 'rclpy' not in sys.modules, 'rclpy imported'")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# --- issue 21: files the CLI is given ---------------------------------------------------------

def _reader(fifo, into: list):
    """A thread reading ``fifo`` to its end into ``into`` (the other side of a pipe)."""
    def read():
        with open(fifo, "rb") as handle:
            into.append(handle.read())
    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_export_writes_through_a_fifo_and_never_replaces_it(tmp_path, photos):
    """Issue 21 item 10: a special file named as --output is written to, never replaced."""
    gallery = tmp_path / "gallery.db"
    assert run(gallery, "add", "alice", photos / "astronaut.png")[0] == 0
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    received = []
    reader = _reader(fifo, received)
    code, out, err = run(gallery, "export", "--output", fifo, timeout=60)
    reader.join(10)
    assert code == 0, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced"
    assert json.loads(received[0])["people"][0]["name"] == "alice"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".export")] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="making a character device (mknod) needs root")
def test_export_to_a_full_device_fails_clearly_and_keeps_the_device(tmp_path, photos):
    """Issue 21 item 10: `export --output /dev/full` as root replaced the device node with
    a JSON file and said "wrote 1 people". Here with a node of our own (/dev/full's numbers,
    1:7) in a temporary folder, so that the machine's /dev/full is never at risk."""
    gallery = tmp_path / "gallery.db"
    assert run(gallery, "add", "alice", photos / "astronaut.png")[0] == 0
    full = tmp_path / "full"
    os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    code, out, err = run(gallery, "export", "--output", full)
    assert stat.S_ISCHR(os.lstat(full).st_mode), "the device node was replaced"
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "No space left on device" in err and str(full) in err
    assert "wrote" not in err


def test_export_through_a_symlink_replaces_the_target(tmp_path, photos):
    """Issue 21 item 10: a symlinked --output is written through (the link stays a link and
    the file it points to gets the export, with its permissions kept)."""
    gallery = tmp_path / "gallery.db"
    assert run(gallery, "add", "alice", photos / "astronaut.png")[0] == 0
    target = tmp_path / "exports" / "gallery.json"
    target.parent.mkdir()
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    code, out, err = run(gallery, "export", "--output", link)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text())["people"][0]["name"] == "alice"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["gallery.json"]


def test_photos_that_are_not_regular_files_are_refused(tmp_path, photos):
    """Issue 21 item 11: `add alice /dev/zero` grew without bound; a FIFO photo hung."""
    gallery = tmp_path / "gallery.db"
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    code, out, err = run(gallery, "add", "alice", "/dev/zero", fifo, timeout=60)
    assert code == 1, err
    assert "/dev/zero: not a regular file (a character device)" in err
    assert f"{fifo}: not a regular file (a FIFO)" in err
    code, out, err = run(gallery, "add", "alice", "/dev/zero", photos / "astronaut.png",
                         timeout=60)
    assert code == 0 and "1 unreadable file" in out, err


def test_fifo_gallery_is_refused(tmp_path):
    """Issue 21 item 11: a FIFO as the gallery path hung the CLI (and the server)."""
    fifo = tmp_path / "gallery.db"
    os.mkfifo(fifo)
    code, out, err = run(fifo, "list", timeout=60)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "not a regular file (a FIFO)" in err and str(fifo) in err


def test_gallery_path_with_an_unknown_user_is_refused(tmp_path):
    """Issue 21 item 14: `~nouser/x.db` created a folder literally named ~nouser."""
    code, out, err = run("~nouser-facerec/x.db", "list", cwd=tmp_path)
    assert code == 1 and err.count("\n") == 1
    assert "no user 'nouser-facerec'" in err
    assert list(tmp_path.iterdir()) == []


def test_photo_over_the_pixel_limit_is_refused_from_its_header(tmp_path, photos):
    """Issue 21 item 1: a small JPEG declaring 12000x9000 behind a stray byte is refused
    from its header (it used to be decoded), and --max-pixels sets the limit."""
    gallery = tmp_path / "gallery.db"
    big = tmp_path / "big.jpg"
    big.write_bytes(bomb("stray byte", 12000, 9000))
    code, out, err = run(gallery, "add", "alice", big)
    assert code == 1
    assert "big.jpg: decode error: image of 12000x9000 = 108000000 pixels exceeds " \
           "max_pixels=50000000" in err
    code, out, err = run(gallery, "add", "alice", photos / "astronaut.png",
                         "--max-pixels", "1000")
    assert code == 1 and "astronaut.png: decode error: image of 512x512" in err


def test_people_commands(location, photos):
    """name / rename / merge / samples / remove-sample / not / sightings / anonymous."""
    from facerec_server.core.enroll import build_pipeline
    from facerec_server.core.gallery import Gallery
    gallery = location
    assert run(gallery, "add", "alice", photos / "astronaut.png")[0] == 0
    pipeline = build_pipeline(upsample=1)
    pipeline.load()
    [messi] = pipeline.describe(cv2.imread(str(photos / "messi.jpg")))
    with Gallery(str(gallery)) as direct:  # what the server does for a confirmed stranger
        anonymous = direct.add_anonymous([messi.descriptor], seen_at=1700000000.0)
        direct.record_sightings([(anonymous, "/camera/image/compressed", 1700000000.0,
                                  1700000060.0, 2)])
    code, out, err = run(gallery, "anonymous")
    assert code == 0 and out.startswith(f"{anonymous}\t1\tlast seen 2023-11-14"), out
    code, out, err = run(gallery, "sightings", anonymous)
    assert code == 0 and "/camera/image/compressed" in out and "2 visits" in out, out
    code, out, err = run(gallery, "sightings", "alice")
    assert code == 1 and "no sightings of 'alice'" in err
    code, out, err = run(gallery, "name", anonymous, "lionel")
    assert code == 0 and f"{anonymous} is 'lionel' (named; 1 samples)" in out, out + err
    code, out, err = run(gallery, "name", anonymous, "x")
    assert code == 1 and "no anonymous identity" in err and "nothing written" in err
    assert run(gallery, "rename", "lionel", "Lionel Messi")[0] == 0
    code, out, err = run(gallery, "rename", "Lionel Messi", "alice")
    assert code == 1 and "merge" in err
    code, out, err = run(gallery, "not", "alice", photos / "messi.jpg", "--min-face-size", 20)
    assert code == 0 and "1 negative example: that face is not 'alice'" in out, out + err
    code, out, err = run(gallery, "merge", "Lionel Messi", "alice")
    assert code == 0 and "merged 'Lionel Messi' into 'alice' (2 samples)" in out, out + err
    code, out, err = run(gallery, "samples", "alice", "--json")
    samples = json.loads(out)
    assert code == 0 and len(samples) == 2
    code, out, err = run(gallery, "remove-sample", samples[1]["id"])
    assert code == 0 and f"removed sample {samples[1]['id']} of 'alice'" in out
    assert run(gallery, "list")[1] == "alice\t1\n"
    with Gallery(str(gallery)) as direct:
        assert direct.snapshot_all().negatives[0] == ["alice"]
        assert [s["input"] for s in direct.sightings("alice")] == ["/camera/image/compressed"]
