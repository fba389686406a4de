"""facerec results as the messages other ROS packages read (message code only, no node).

* ROS4HRI (REP-155, ``hri_msgs`` 2.0): face ids, ``IdsList`` (``humans/faces/tracked``),
  ``NormalizedRegionOfInterest2D`` (``humans/faces/<id>/roi``) and ``IdsMatch``
  (``humans/candidate_matches``). A face id is transient: ``<prefix><track id>`` (a topic
  name token may not start with a digit; the prefix tells the server's faces from the
  bridge's). A person id is permanent: the face's gallery identity (see :func:`person_of`).
* ``vision_msgs`` 4.x ``Detection2DArray``: one ``Detection2D`` per face or object, box =
  the result's box, ``id`` = the face id (empty for an untracked face or an object).
* ``foxglove_msgs`` 3.x ``ImageAnnotations``: per face or object a closed outline of its box
  and a text label above it, stamped with the image's stamp (Foxglove's Image panel draws
  annotations whose stamp equals the image's).

Boxes are the core's ``(left, top, right, bottom)`` pixels, right/bottom exclusive, which are
the image coordinates of the box's outer edges (the convention of vision_msgs and Foxglove:
x right, y down, origin at the top-left corner of the top-left pixel): a ``Face.roi`` of
``x_offset=l, width=w`` is a bbox of ``size_x=w``, centre ``l + w/2``, and an outline from
x=l to x=l+w. The message packages are imported when a function is called: the caller checks
:func:`missing` first (they are optional; see ecosystem_outputs).
"""
from __future__ import annotations

import hashlib
import importlib
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from facerec_server.core.types import Box, FaceResult, ObjectResult

#: output (the ``outputs.<name>`` parameter) -> the message package it needs (rosdep key)
PACKAGES: Dict[str, str] = {"hri": "hri_msgs", "vision_msgs": "vision_msgs",
                            "foxglove": "foxglove_msgs"}

UNKNOWN = "unknown"
#: label colours (r, g, b, a in 0..1): as the overlay (known green, unknown red, objects blue)
KNOWN_COLOUR = (0.0, 0.8, 0.0, 1.0)
UNKNOWN_COLOUR = (0.9, 0.0, 0.0, 1.0)
OBJECT_COLOUR = (0.1, 0.4, 1.0, 1.0)
TEXT_BACKGROUND = (0.0, 0.0, 0.0, 0.6)
FONT_SIZE = 14.0

_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


def missing(output: str) -> Optional[str]:
    """Why ``output``'s message package cannot be used (one line), or None when it imports."""
    package = PACKAGES[output]
    try:
        importlib.import_module(f"{package}.msg")
    except ImportError as exc:
        return (f"outputs.{output}: the ROS package {package} is not importable ({exc}); "
                f"install it (rosdep key {package}, or `make setup` builds it from "
                f"ros-msgs-src) to get this output")
    return None


# --- ids ------------------------------------------------------------------------------------
def face_id(track_id: int, prefix: str = "f") -> str:
    """The REP-155 face id of a track ("" for an untracked face: track id 0)."""
    return f"{prefix}{int(track_id)}" if track_id else ""


def person_id(name: str) -> str:
    """A permanent REP-155 person id for a gallery identity, usable as a topic name token
    (hri_person_manager makes ``humans/persons/<id>/`` topics): the name itself when it is
    one (a letter, then letters, digits, single underscores; at most 64 characters), else
    its letters and digits joined by ``_`` (at most 48) plus 6 hex digits of its SHA-1 (so
    two names do not share an id)."""
    if _TOKEN.match(name) and "__" not in name and not name.endswith("_") \
            and len(name) <= 64:
        return name
    base = "_".join(re.findall(r"[A-Za-z0-9]+", name))[:48] or "person"
    if not base[0].isalpha():
        base = "p_" + base
    return f"{base}_{hashlib.sha1(name.encode('utf-8')).hexdigest()[:6]}"


def person_of(face: FaceResult) -> Optional[str]:
    """The person id of a face: its gallery identity (the voted name of its track), or None
    for a face that matches no identity (no candidate match is published for it).

    An anonymous identity (``unknown-<n>``, the persistent id the gallery gives an unknown
    face: ``FaceResult.anonymous_id``) is an identity too, as ROS4HRI gives unknown faces
    permanent person ids.
    """
    identity = face.name or face.anonymous_id
    return person_id(identity) if identity else None


def match_confidence(face: FaceResult) -> float:
    """The confidence of :func:`person_of`'s match: the face's match confidence to its known
    person, or to its anonymous identity's samples."""
    return face.confidence if face.name else face.anonymous_confidence


# --- ROS4HRI (hri_msgs) ---------------------------------------------------------------------
def ids_list(header, ids: Iterable[str]):
    from hri_msgs.msg import IdsList
    return IdsList(header=header, ids=list(ids))


def normalized_roi(header, box: Box, size: Tuple[int, int], score: float):
    """``NormalizedRegionOfInterest2D`` of ``box`` in an image of ``size`` (width, height):
    corners divided by the image size; ``c`` = the detector's score clipped to 0..1 (HOG: the
    SVM margin, above 1 for most clear faces)."""
    from hri_msgs.msg import NormalizedRegionOfInterest2D
    width, height = size
    left, top, right, bottom = box
    return NormalizedRegionOfInterest2D(
        header=header, xmin=_unit(left / width), ymin=_unit(top / height),
        xmax=_unit(right / width), ymax=_unit(bottom / height), c=_unit(score))


def ids_match(face: str, person: str, confidence: float):
    """``IdsMatch`` face -> person; confidence 0 says they are not (or no longer) matched."""
    from hri_msgs.msg import IdsMatch
    return IdsMatch(id1=face, id1_type=IdsMatch.FACE, id2=person, id2_type=IdsMatch.PERSON,
                    confidence=_unit(confidence))


# --- vision_msgs ----------------------------------------------------------------------------
def face_detections(header, faces: Sequence[FaceResult], ids: Sequence[str]):
    """One Detection2D per face: class_id = the name ("unknown" when none), score =
    Face.confidence (0 for an unknown face), id = the face id."""
    return _detections(header, [
        (face.box, face.name or UNKNOWN, face.confidence, fid)
        for face, fid in zip(faces, ids)])


def object_detections(header, objects: Iterable[ObjectResult]):
    """One Detection2D per object label: class_id = label, score = the model's score; a
    whole-image label (all-zero box) has a zero-size bbox at (0, 0)."""
    return _detections(header, [(o.box, o.label, o.score, "") for o in objects])


def _detections(header, items):
    from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesis,
                                 ObjectHypothesisWithPose, Point2D, Pose2D)
    detections = []
    for box, label, score, ident in items:
        left, top, right, bottom = (float(v) for v in box)
        bbox = BoundingBox2D(center=Pose2D(position=Point2D(x=(left + right) / 2,
                                                            y=(top + bottom) / 2), theta=0.0),
                             size_x=right - left, size_y=bottom - top)
        hypothesis = ObjectHypothesisWithPose(
            hypothesis=ObjectHypothesis(class_id=str(label), score=float(score)))
        detections.append(Detection2D(header=header, results=[hypothesis], bbox=bbox,
                                      id=ident))
    return Detection2DArray(header=header, detections=detections)


# --- foxglove_msgs --------------------------------------------------------------------------
def face_annotations(header, faces: Sequence[FaceResult], ids: Sequence[str]):
    """Outline and label ("name confidence [face id]", "unknown [face id]", or the anonymous
    identity "unknown-17 [face id]") per face."""
    items = []
    for face, fid in zip(faces, ids):
        text = f"{face.name} {face.confidence:.2f}" if face.name else (
            face.anonymous_id or UNKNOWN)
        if fid:
            text += f" [{fid}]"
        items.append((face.box, text, KNOWN_COLOUR if face.name else UNKNOWN_COLOUR, None))
    return _annotations(header, items)


def object_annotations(header, objects: Iterable[ObjectResult]):
    """Outline and "label score" per detected object; a whole-image label (all-zero box) is
    a text line in the top-left corner."""
    items, line = [], 0
    for obj in objects:
        text = f"{obj.label} {obj.score:.2f}"
        if any(obj.box):
            items.append((obj.box, text, OBJECT_COLOUR, None))
        else:
            line += 1
            items.append((None, text, OBJECT_COLOUR, (4.0, line * (FONT_SIZE + 4.0))))
    return _annotations(header, items)


def _annotations(header, items):
    """items: (box or None, text, rgba, text position or None = above the box)."""
    from foxglove_msgs.msg import (Color, ImageAnnotations, Point2, PointsAnnotation,
                                   TextAnnotation)
    stamp = header.stamp
    msg = ImageAnnotations()
    for box, text, colour, position in items:
        if box is not None:
            left, top, right, bottom = (float(v) for v in box)
            msg.points.append(PointsAnnotation(
                timestamp=stamp, type=PointsAnnotation.LINE_LOOP,
                points=[Point2(x=x, y=y) for x, y in _corners(left, top, right, bottom)],
                outline_color=Color(r=colour[0], g=colour[1], b=colour[2], a=colour[3]),
                thickness=2.0))
            if position is None:
                position = (left, max(top - 4.0, FONT_SIZE))
        msg.texts.append(TextAnnotation(
            timestamp=stamp, position=Point2(x=position[0], y=position[1]), text=text,
            font_size=FONT_SIZE, text_color=Color(r=1.0, g=1.0, b=1.0, a=1.0),
            background_color=Color(r=TEXT_BACKGROUND[0], g=TEXT_BACKGROUND[1],
                                   b=TEXT_BACKGROUND[2], a=TEXT_BACKGROUND[3])))
    return msg


def _corners(left: float, top: float, right: float, bottom: float) -> List[Tuple[float, float]]:
    return [(left, top), (right, top), (right, bottom), (left, bottom)]


def _unit(value: float) -> float:
    return min(max(float(value), 0.0), 1.0)
