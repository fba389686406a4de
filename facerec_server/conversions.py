"""Core results to facerec_msgs / sensor_msgs messages (and back, for the bridge and tests).

Image messages follow cv_bridge's conventions exactly, so cv_bridge users and rviz read them:
``sensor_msgs/Image`` is ``bgr8`` with ``step = width * 3`` and ``is_bigendian = 0``;
``sensor_msgs/CompressedImage.format`` is ``"jpeg"``: what cv_bridge's
``cv2_to_compressed_imgmsg(img, dst_format="jpeg")`` writes (its default spelling is "jpg";
cv_bridge's ``compressed_imgmsg_to_cv2`` decodes either, as it ignores the string).
"""
from __future__ import annotations

import math
from typing import Iterable, List

import numpy as np
from geometry_msgs.msg import Point32
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest

from facerec_msgs.msg import Face, FaceArray, Object, ObjectArray
from facerec_server.core.images import image_fields
from facerec_server.core.types import Box, FaceResult, ObjectResult


def roi_from_box(box: Box) -> RegionOfInterest:
    """(left, top, right, bottom) pixels -> RegionOfInterest (offsets = top-left corner)."""
    left, top, right, bottom = (int(v) for v in box)
    return RegionOfInterest(x_offset=max(left, 0), y_offset=max(top, 0),
                            width=max(right - left, 0), height=max(bottom - top, 0),
                            do_rectify=False)


def face_to_msg(face: FaceResult, with_descriptor: bool) -> Face:
    msg = Face()
    msg.name = face.name
    msg.distance = float(face.distance) if face.distance is not None else math.inf
    msg.confidence = float(face.confidence)
    msg.roi = roi_from_box(face.box)
    msg.detection_score = float(face.detection_score)
    msg.track_id = int(face.track_id)
    msg.track_state = int(face.track_state)
    msg.anonymous_id = face.anonymous_id
    if face.landmarks is not None:
        msg.landmarks = [Point32(x=float(x), y=float(y), z=0.0)
                         for x, y in np.asarray(face.landmarks, dtype=np.float32)]
    if with_descriptor and face.descriptor is not None:
        msg.descriptor = np.asarray(face.descriptor, dtype=np.float32).tolist()
    return msg


def face_array(header, source: str, faces: Iterable[FaceResult], processing_time: float,
               with_descriptors: bool = False) -> FaceArray:
    """A FaceArray whose header is the source image's (stamp and frame_id)."""
    msg = FaceArray()
    msg.header = header
    msg.source = source
    msg.faces = [face_to_msg(f, with_descriptors) for f in faces]
    msg.processing_time = float(processing_time)
    return msg


def object_array(header, source: str, objects: Iterable[ObjectResult],
                 processing_time: float) -> ObjectArray:
    msg = ObjectArray()
    msg.header = header
    msg.source = source
    msg.objects = [Object(label=o.label, score=float(o.score), roi=roi_from_box(o.box),
                          model=o.model) for o in objects]
    msg.processing_time = float(processing_time)
    return msg


def image_msg(header, image_bgr: np.ndarray) -> Image:
    """BGR uint8 array -> sensor_msgs/Image exactly as cv_bridge.cv2_to_imgmsg(img, 'bgr8')."""
    return Image(header=header, **image_fields(image_bgr))


def compressed_msg(header, jpeg: bytes) -> CompressedImage:
    """JPEG bytes -> sensor_msgs/CompressedImage with format "jpeg"."""
    msg = CompressedImage()
    msg.header = header
    msg.format = "jpeg"
    msg.data = jpeg
    return msg


def names_and_counts(people: List) -> tuple:
    """[(name, count), ...] -> (names, counts) lists for ListFaces."""
    return [p[0] for p in people], [int(p[1]) for p in people]
