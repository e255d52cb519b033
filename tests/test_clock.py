"""Timestamps: the hand-made formatting of epoch seconds says exactly what datetime would."""

from __future__ import annotations

import random
import time
from datetime import datetime, UTC

from gateway.clock import from_timestamp, iso, now_iso


def test_epoch_seconds_format_as_datetime_formats_them_to_the_millisecond():
    rng = random.Random(7)
    moments = [rng.uniform(0, 4_102_444_800) for _ in range(20_000)]  # 1970 to 2100
    moments += [whole + fraction for whole in (0, 1_700_000_000, 1_796_322_246, 951_782_400)  # 2000-02-29
                for fraction in (0.0, 0.0005, 0.0009995, 0.9994999, 0.9995, 0.9999994, 0.9999995, 0.9999999)]
    moments += [-1.5, -0.0000004, 1e-7]
    for moment in moments:
        assert from_timestamp(moment) == iso(datetime.fromtimestamp(moment, UTC)), moment


def test_now_is_this_moment_in_the_api_format():
    before = datetime.now(UTC).replace(microsecond=0)
    stamp = now_iso()
    after = datetime.now(UTC)
    assert len(stamp) == 24 and stamp.endswith("Z") and stamp[10] == "T"
    assert before <= datetime.fromisoformat(stamp) <= after
    assert time.time() - datetime.fromisoformat(stamp).timestamp() < 5
