"""The clock of the codes (the verifier's, the enrolment's, the staff's), one seam for the
tests that move time (a mail client reconnecting ten minutes later, a back-off running out)
without sleeping, or stop it (a code computed at one time step and checked at the next)."""

import time
from datetime import UTC, datetime


def now() -> float:
    return time.time()


def utcnow() -> datetime:
    return datetime.fromtimestamp(now(), UTC)
