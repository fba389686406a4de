"""Box overlap for tests."""


def iou(a, b) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes, right/bottom exclusive
    (the project's box convention)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / float(area - inter)


def iou_inclusive(a, b) -> float:
    """The same for dlib rectangles, whose right/bottom pixels belong to the box."""
    return iou((a[0], a[1], a[2] + 1, a[3] + 1), (b[0], b[1], b[2] + 1, b[3] + 1))
