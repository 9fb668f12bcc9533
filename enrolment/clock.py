"""The verifier's clock, one seam for the tests that move time (a mail client reconnecting
ten minutes later, a back-off running out) without sleeping."""

import time
from datetime import UTC, datetime


def now() -> float:
    return time.time()


def utcnow() -> datetime:
    return datetime.fromtimestamp(now(), UTC)
