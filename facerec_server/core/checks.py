"""Type checks of configuration values, shared by the core's config classes (FaceConfig,
TrackingConfig): numpy scalars count as numbers, bools never do, NaN is not a number."""
from __future__ import annotations

import numpy as np


def is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) \
        and not isinstance(value, bool) and value == value  # NaN fails
