"""``facerec-enroll``: manage the known-people gallery from the command line (no ROS needed).

Examples::

    facerec-enroll add alice alice1.jpg alice2.jpg
    facerec-enroll add-folder people/          # people/<name>/*.jpg|*.jpeg|*.png
    facerec-enroll list
    facerec-enroll forget alice
    facerec-enroll import-reference reference.json
    facerec-enroll export --output gallery.json
    facerec-enroll anonymous                   # people not introduced yet: unknown-<n>
    facerec-enroll name unknown-17 alice       # unknown-17 is alice
    facerec-enroll rename alice "Alice Smith"
    facerec-enroll merge bob robert            # bob's samples join robert
    facerec-enroll samples alice               # sample ids, for remove-sample
    facerec-enroll remove-sample 42
    facerec-enroll not alice photo.jpg         # the face in photo.jpg is not alice
    facerec-enroll sightings alice             # when and where alice was seen

The gallery is the one the server uses (``--gallery``: an SQLite file, default
``~/.ros/facerec/gallery.db``, or a ``postgresql://`` URL); the CLI may run while servers are
up, and they use its changes within a second. Exit status: 0 on
success, 1 when the request failed (nothing enrolled, unknown name, skipped entries, unusable
file), 2 for usage errors. Per-image problems go to stderr, results to stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional

from .core import files
from .core.gallery import (DEFAULT_PATH, DEFAULT_THRESHOLD, EnrollmentError, Gallery,
                           GalleryError, validate_name)
from .core.images import DEFAULT_MAX_PIXELS
from .core.models import ModelError

# core.enroll and core.reference (OpenCV, dlib) are imported only by the commands that
# detect faces, so list/forget/export start fast.

PROG = "facerec-enroll"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal, or forced)."""

    WIDTH = 30

    def __init__(self, enabled: bool, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._shown = False

    def update(self, done: int, total: int, label: str) -> None:
        if not self.enabled or total <= 0:
            return
        filled = self.WIDTH * done // total
        text = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total} {label}"[:100]
        self.stream.write("\r" + text.ljust(100))
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()
            self._shown = False

    def say(self, message: str) -> None:
        """Print a line on stderr without garbling the bar."""
        self.clear()
        print(message, file=self.stream, flush=True)


def _common_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """Options accepted before and after the sub-command."""
    def default(value):
        return value if defaults else argparse.SUPPRESS
    parser.add_argument("--gallery", metavar="PATH|URL", default=default(None),
                        help=f"gallery file (default {DEFAULT_PATH}, created on first use) or "
                             "postgresql://[user@]host[:port]/database URL")
    parser.add_argument("--upsample", type=int, default=default(1), metavar="N",
                        help="detector upsampling 0..4; 1 finds faces down to ~40 px, "
                             "2 down to ~20 px (default 1)")
    parser.add_argument("--detector", choices=("hog", "cnn"), default=default("hog"),
                        help="face detector (default hog; cnn is slow without a GPU)")
    parser.add_argument("--min-face-size", type=int, default=default(40), metavar="PX",
                        help="smallest usable face box side in pixels (default 40)")
    parser.add_argument("--min-score", type=float, default=default(0.5), metavar="S",
                        help="ignore detections scoring below this (default 0.5)")
    parser.add_argument("--threshold", type=float, default=default(DEFAULT_THRESHOLD),
                        metavar="D", help="distance below which a face counts as an already "
                        f"enrolled person (default {DEFAULT_THRESHOLD})")
    parser.add_argument("--max-pixels", type=_positive, default=default(DEFAULT_MAX_PIXELS),
                        metavar="N", help="largest photo decoded, in pixels (width x height); "
                        "a photo declaring more is refused from its header (default "
                        f"{DEFAULT_MAX_PIXELS})")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction,
                        default=default(None),
                        help="show a progress bar on stderr (default: when it is a terminal)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Manage the facerec known-people gallery (no ROS needed).")
    _common_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, defaults=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add = commands.add_parser("add", parents=[common], help="enroll one person from photos")
    add.add_argument("name", help="person's name (1..64 characters)")
    add.add_argument("photos", nargs="+", metavar="PHOTO", help="JPEG or PNG files")
    add.add_argument("--force", action="store_true",
                     help="enroll even if a face matches a different enrolled person")
    add.set_defaults(func=cmd_add)

    folder = commands.add_parser("add-folder", parents=[common],
                                 help="enroll every sub-folder DIR/<name>/ as a person")
    folder.add_argument("folder", metavar="DIR")
    folder.add_argument("--force", action="store_true",
                        help="enroll even if a face matches a different enrolled person")
    folder.set_defaults(func=cmd_add_folder)

    listing = commands.add_parser("list", parents=[common], help="list people and samples")
    listing.add_argument("--json", action="store_true", help="print a JSON object")
    listing.set_defaults(func=cmd_list)

    forget = commands.add_parser("forget", parents=[common],
                                 help="remove a person and all their samples")
    forget.add_argument("name")
    forget.set_defaults(func=cmd_forget)

    reference = commands.add_parser(
        "import-reference", parents=[common],
        help='import a reference file [{"tag": NAME, "photos": [PATH, ...]}, ...]')
    reference.add_argument("file", metavar="FILE")
    reference.add_argument("--force", action="store_true",
                           help="import even if a face matches a different person")
    reference.set_defaults(func=cmd_import_reference)

    export = commands.add_parser("export", parents=[common], help="write the gallery as JSON")
    export.add_argument("--output", "-o", metavar="FILE", help="file to write (default stdout)")
    export.add_argument("--no-descriptors", action="store_true",
                        help="leave the 128-D descriptors out")
    export.set_defaults(func=cmd_export)
    anonymous = commands.add_parser("anonymous", parents=[common],
                                    help="list the anonymous identities (unknown-<n>)")
    anonymous.add_argument("--json", action="store_true", help="print a JSON list")
    anonymous.set_defaults(func=cmd_anonymous)

    name = commands.add_parser("name", parents=[common],
                               help="name an anonymous identity (or add it to a person)")
    name.add_argument("anonymous_id", metavar="ANONYMOUS_ID", help="e.g. unknown-17")
    name.add_argument("name", help="the person's name")
    name.set_defaults(func=cmd_name)

    rename = commands.add_parser("rename", parents=[common], help="rename a person")
    rename.add_argument("name")
    rename.add_argument("new_name", metavar="NEW_NAME")
    rename.set_defaults(func=cmd_rename)

    merge = commands.add_parser("merge", parents=[common],
                                help="move SOURCE's samples to TARGET and remove SOURCE")
    merge.add_argument("source", metavar="SOURCE")
    merge.add_argument("target", metavar="TARGET")
    merge.set_defaults(func=cmd_merge)

    samples = commands.add_parser("samples", parents=[common],
                                  help="list a person's samples (ids for remove-sample)")
    samples.add_argument("name")
    samples.add_argument("--json", action="store_true", help="print a JSON list")
    samples.set_defaults(func=cmd_samples)

    remove = commands.add_parser("remove-sample", parents=[common],
                                 help="remove one sample by its id")
    remove.add_argument("sample_id", metavar="ID", type=int)
    remove.set_defaults(func=cmd_remove_sample)

    negative = commands.add_parser("not", parents=[common],
                                   help="the face in each photo is not NAME (stops that match)")
    negative.add_argument("name")
    negative.add_argument("photos", nargs="+", metavar="PHOTO",
                          help="JPEG or PNG files, one face each")
    negative.set_defaults(func=cmd_not)

    sightings = commands.add_parser("sightings", parents=[common],
                                    help="who was seen where, first and last time, how often")
    sightings.add_argument("name", nargs="?", default="",
                           help="only this person or anonymous identity")
    sightings.add_argument("--input", default="", metavar="TOPIC", help="only this input")
    sightings.add_argument("--json", action="store_true", help="print a JSON list")
    sightings.set_defaults(func=cmd_sightings)
    return parser


# --- helpers ------------------------------------------------------------------------------
def _gallery(args) -> Gallery:
    return Gallery(args.gallery or None)


def _enroller(args, gallery: Gallery):
    from .core.enroll import EnrollConfig, Enroller, build_pipeline
    config = EnrollConfig(min_face_size=args.min_face_size, min_score=args.min_score,
                          threshold=args.threshold, max_pixels=args.max_pixels)
    pipeline = build_pipeline(upsample=args.upsample, detector=args.detector,
                              threshold=args.threshold)
    pipeline.load()  # a missing model fails here with a clear ModelError
    return Enroller(gallery, pipeline, config)


def _progress(args) -> Progress:
    enabled = args.progress if args.progress is not None else sys.stderr.isatty()
    return Progress(enabled)


def _read_photos(paths: List[str], bar: Progress):
    """(data, label, source) for readable files; unreadable ones are reported."""
    loaded, failed = [], 0
    for path in paths:
        try:
            data = files.read_regular(path, "photo", files.MAX_IMAGE_FILE)
        except files.UnusableFile as error:
            bar.say(f"  {path}: {error.reason}")
            failed += 1
            continue
        loaded.append((data, path, "cli:" + os.path.abspath(path)))
    return loaded, failed


def _enroll(enroller, name: str, paths: List[str], force: bool, bar: Progress,
            offset: int = 0, total: Optional[int] = None):
    """Enroll ``name`` from files; report per-image failures; return the EnrollResult."""
    loaded, unreadable = _read_photos(paths, bar)
    total = total if total is not None else len(paths)

    def progress(done, _, label, reason):
        if reason is not None:
            bar.say(f"  {label}: {reason}")
        bar.update(offset + done + unreadable, total, os.path.basename(label))

    result = enroller.enroll_images(name, [d for d, _, _ in loaded], force=force,
                                    sources=[s for _, _, s in loaded],
                                    labels=[label for _, label, _ in loaded], progress=progress)
    if unreadable and result.success:
        result.message += f"; {unreadable} unreadable file{'s' if unreadable > 1 else ''}"
    return result


# --- commands -------------------------------------------------------------------------------
def cmd_add(args) -> int:
    validate_name(args.name)  # before loading any model
    bar = _progress(args)
    with _gallery(args) as gallery:
        result = _enroll(_enroller(args, gallery), args.name, args.photos, args.force, bar)
    bar.clear()
    print(result.message, file=sys.stdout if result.success else sys.stderr)
    return 0 if result.success else 1


def _folder_people(folder: str):
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} is not a folder")
    people = []
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if os.path.isdir(path):
            photos = sorted(os.path.join(path, f) for f in os.listdir(path)
                            if f.lower().endswith(IMAGE_EXTENSIONS)
                            and os.path.isfile(os.path.join(path, f)))
            people.append((entry, photos))
    return people


def cmd_add_folder(args) -> int:
    bar = _progress(args)
    try:
        people = _folder_people(args.folder)
    except OSError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    if not people:
        print(f"{PROG}: error: no sub-folders in {args.folder}; expected "
              f"{args.folder}/<name>/<photo>.jpg", file=sys.stderr)
        return 1
    total = sum(len(photos) for _, photos in people)
    failures = 0
    with _gallery(args) as gallery:
        enroller = _enroller(args, gallery)
        done = 0
        for name, photos in people:
            if not photos:
                bar.say(f"{name}: no .jpg/.jpeg/.png photos; skipped")
                failures += 1
                continue
            result = _enroll(enroller, name, photos, args.force, bar, done, total)
            done += len(photos)
            if result.success:
                bar.clear()
                print(result.message, flush=True)
            else:
                bar.say(result.message)
                failures += 1
    bar.clear()
    print(f"{len(people) - failures} of {len(people)} people enrolled", file=sys.stderr)
    return 1 if failures else 0


def cmd_list(args) -> int:
    with _gallery(args) as gallery:
        people = gallery.people()
    if args.json:
        print(json.dumps({"names": [n for n, _ in people], "samples": [c for _, c in people]}))
        return 0
    for name, count in people:
        print(f"{name}\t{count}")
    print(f"{len(people)} people, {sum(c for _, c in people)} samples", file=sys.stderr)
    return 0


def cmd_forget(args) -> int:
    with _gallery(args) as gallery:
        removed = gallery.forget(args.name)
        path = gallery.path
    if not removed:
        print(f"{PROG}: no person named {args.name!r} in {path}", file=sys.stderr)
        return 1
    print(f"removed {args.name!r} ({removed} sample{'s' if removed != 1 else ''})")
    return 0


def cmd_import_reference(args) -> int:
    from .core.reference import import_reference, load_reference
    load_reference(args.file)  # fail fast on an unusable file, before loading models
    bar = _progress(args)
    with _gallery(args) as gallery:
        enroller = _enroller(args, gallery)

        def progress(done, total, photo, error):
            bar.update(done, total, os.path.basename(photo))

        report = import_reference(args.file, enroller, force=args.force, progress=progress)
    bar.clear()
    for line in report.lines():
        print(line, file=sys.stderr if line.startswith("skipped") else sys.stdout)
    return 0 if report.ok else 1


def cmd_export(args) -> int:
    with _gallery(args) as gallery:
        data = gallery.export(descriptors=not args.no_descriptors)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if not args.output or args.output == "-":
        sys.stdout.write(text)
        return 0
    files.write_file(args.output, text.encode("utf-8"), "export file")
    people = data["people"]
    print(f"wrote {len(people)} people, {sum(len(p['samples']) for p in people)} samples "
          f"to {args.output}", file=sys.stderr)
    return 0


def _when(seconds) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(seconds)))


def cmd_anonymous(args) -> int:
    with _gallery(args) as gallery:
        rows = gallery.anonymous()
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        print(f"{row['name']}\t{row['samples']}\tlast seen {_when(row['last_seen'])}")
    print(f"{len(rows)} anonymous identities", file=sys.stderr)
    return 0


def cmd_name(args) -> int:
    with _gallery(args) as gallery:
        samples, merged = gallery.name_anonymous(args.anonymous_id, args.name)
    how = "added to the existing person" if merged else "named"
    print(f"{args.anonymous_id} is {args.name!r} ({how}; {samples} samples)")
    return 0


def cmd_rename(args) -> int:
    with _gallery(args) as gallery:
        samples = gallery.rename(args.name, args.new_name)
    print(f"renamed {args.name!r} to {args.new_name!r} ({samples} samples)")
    return 0


def cmd_merge(args) -> int:
    with _gallery(args) as gallery:
        samples = gallery.merge(args.source, args.target)
    print(f"merged {args.source!r} into {args.target!r} ({samples} samples)")
    return 0


def cmd_samples(args) -> int:
    with _gallery(args) as gallery:
        rows = gallery.samples(args.name)
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print(f"{PROG}: no person named {args.name!r} (or no samples)", file=sys.stderr)
        return 1
    for row in rows:
        print(f"{row['id']}\t{_when(row['created_at'])}\t{row['source']}")
    return 0


def cmd_remove_sample(args) -> int:
    with _gallery(args) as gallery:
        name = gallery.remove_sample(args.sample_id)
    print(f"removed sample {args.sample_id} of {name!r}")
    return 0


def cmd_not(args) -> int:
    validate_name(args.name)
    bar = _progress(args)
    with _gallery(args) as gallery:
        if not dict(gallery.people()).get(args.name) and not any(
                row["name"] == args.name for row in gallery.anonymous()):
            raise EnrollmentError(f"no person named {args.name!r} in the gallery")
        enroller = _enroller(args, gallery)
        loaded, failed = _read_photos(args.photos, bar)
        descriptors = []
        for data, label, _ in loaded:
            sample, reason = enroller.sample_from_image(data)
            if sample is None:
                bar.say(f"  {label}: {reason}")
                failed += 1
            else:
                descriptors.append(sample.descriptor)
        if failed:
            raise EnrollmentError(f"{failed} of {len(args.photos)} photos not usable")
        added = gallery.add_negatives(args.name, descriptors, source="cli:not")
    print(f"{added} negative example{'s' if added != 1 else ''}: that face is not {args.name!r}")
    return 0


def cmd_sightings(args) -> int:
    with _gallery(args) as gallery:
        rows = gallery.sightings(args.name, args.input)
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        print(f"{row['name']}\t{row['input']}\tfirst {_when(row['first_seen'])}\t"
              f"last {_when(row['last_seen'])}\t{row['count']} visits")
    if not rows:
        print(f"{PROG}: no sightings{' of ' + repr(args.name) if args.name else ''}",
              file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Console entry point ``facerec-enroll``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EnrollmentError as error:
        print(f"{PROG}: refused: {error}; nothing written", file=sys.stderr)
        return 1
    except (GalleryError, ModelError, OSError, ValueError) as error:  # incl. ReferenceError
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; every finished person is saved", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
