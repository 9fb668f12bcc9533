"""Every log line the suite wrote holds none of the seeds, passwords or codes it used: the
test process's own log, each gunicorn's, the stand-in PSC's, and nginx's, Dovecot's and
Postfix's. Named to run last; pytest-django runs tests without a database after the others.
"""

import re

from tests import secret_watch


def log_files():
    yield secret_watch.PROCESS_LOG
    for path in sorted(secret_watch.OTHER_LOGS):
        if path.is_dir():
            yield from (p for p in path.rglob("*") if p.is_file() and p.suffix in {".log", ""})
        elif path.exists():
            yield path


def test_no_secret_in_any_log_line(capsys):
    seen = secret_watch.SEEN
    texts = {text: "seed" for text in seen["seeds"]}
    texts |= {text: "password" for text in seen["passwords"]}
    texts |= {text: "password" for text in secret_watch.passwords_given_to_other_processes()}
    texts |= {text: "enrolment token" for text in seen["tokens"]}
    # A code alone is six digits: looked for in our own lines only, as a whole token (other
    # programs' lines hold pids and ports).
    code = re.compile(r"(?<![\w.:])(\d{6})(?![\w.])")
    found, lines, files = [], 0, 0
    for path in log_files():
        files += 1
        text_of_file = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text_of_file.splitlines(), 1):
            lines += 1
            # Where and what kind, not the secret itself (this report is a log line too).
            found += [(path.name, number, kind) for text, kind in texts.items() if text in line]
            if path == secret_watch.PROCESS_LOG:
                codes = [c for c in code.findall(line) if c in seen["codes"]]
                found += [(path.name, number, "code")] * len(codes)
    with capsys.disabled():  # in every run's output
        print(
            f"\n{lines} log lines in {files} files checked for {len(texts)} seeds, "
            f"passwords and enrolment tokens and {len(seen['codes'])} codes"
        )
    assert found == []
    assert lines > 0 and texts and seen["codes"]  # the suite did log, and did use secrets
