"""What the suite's secrets are, and where its log lines went, for the test that greps every
log line for them (tests/test_zz_logs.py).

Recorded while the suite runs: every seed made (enrolment.seeds.new_seed), every password
hashed (make_password), every code computed (enrolment.totp.totp) and every staff enrolment
token issued (enrolment.staff_tokens.issue) in the test process,
plus the passwords the tests hand to other processes. Log lines: the test process's own
(a file handler on the root logger), each gunicorn's log, the logs of the session's
stand-in PSC and mail stack, and those of the private PostgreSQL clusters.
"""

import base64
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

SEEN = {"seeds": set(), "passwords": set(), "codes": set(), "tokens": set()}
PROCESS_LOG = Path(tempfile.gettempdir()) / f"mss-totp-test-process-{os.getpid()}.log"
OTHER_LOGS: set[Path] = set()  # files or folders of other processes' logs


def register_log(path) -> None:
    OTHER_LOGS.add(Path(path))


def remove_logs() -> None:
    """At the session's end, once grepped: the test process's log and the copies and
    gunicorn logs made in the temporary folder (folders of other processes are theirs)."""
    for path in {PROCESS_LOG, *OTHER_LOGS}:
        if path.is_file() and path.parent == PROCESS_LOG.parent:
            path.unlink(missing_ok=True)


def keep_log(path: Path) -> None:
    """A copy of a log about to be deleted with its folder (a private PostgreSQL's), kept
    for the grep when the suite is watching, that is when this process's log is captured."""
    if PROCESS_LOG.exists() and path.exists():
        kept = PROCESS_LOG.with_name(f"{PROCESS_LOG.stem}-kept-{len(OTHER_LOGS)}.log")
        shutil.copyfile(path, kept)
        register_log(kept)


def passwords_given_to_other_processes() -> set[str]:
    """The tests' PASSWORD constants: handed to manage.py or gunicorn, hashed over there."""
    found = set()
    for name, module in list(sys.modules.items()):
        if name.startswith("tests."):
            for attribute, value in vars(module).items():
                if "PASSWORD" in attribute and isinstance(value, str) and len(value) >= 6:
                    found.add(value)
    return found


def watch_seed(seed: bytes) -> bytes:
    SEEN["seeds"].update({seed.hex(), base64.b32encode(seed).decode().rstrip("=")})
    return seed


def watch_password(raw) -> None:
    if isinstance(raw, str) and len(raw) >= 6:
        SEEN["passwords"].add(raw)


def watch_token(token: str) -> None:
    SEEN["tokens"].update({token, token.replace("-", "")})


def watch_code(code: str) -> str:
    SEEN["codes"].add(code)
    return code


def start_capturing_logs() -> logging.Handler:
    handler = logging.FileHandler(PROCESS_LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    return handler
