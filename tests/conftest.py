import base64
import json
import os
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from enrolment import seeds
from enrolment.models import Device
from tests.mail_fixtures import claire, nginx_secret, nurses  # noqa: F401  (fixtures)
from tests.mail_stack import mail, mail_stack  # noqa: F401  (fixtures)
from tests.staff_fixtures import auditor_client, helpdesk_client, make_staff  # noqa: F401

# Playwright's sync API runs an event loop in the test's thread; the ORM calls the tests make
# beside it are synchronous and safe there.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
CHROMIUM = Path("/usr/lib/chromium/chromium")


def keyring_json(active: str, *key_ids: str) -> str:
    """A keyring with a fresh random key for each id; ``active`` among them."""
    keys = {key_id: base64.b64encode(os.urandom(32)).decode() for key_id in {active, *key_ids}}
    return json.dumps({"active": active, "keys": keys})


@pytest.fixture(autouse=True)
def _fresh_audit_sampling():
    """Some refusals are audited once a minute per worker (audit.due): each test starts as
    a fresh worker, whatever the tests before it were refused."""
    from enrolment import audit

    audit._last_sampled.clear()


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("alice")


@pytest.fixture
def make_device(db):
    def make(user, seed=None, confirmed=True, keyring=None, **fields):
        device = Device(user=user, name="FreeOTP", confirmed=confirmed, **fields)
        with transaction.atomic():  # as the site seals: in the transaction that saves it
            device.set_seed(seed or seeds.new_seed(), keyring)
            device.save()
        return device

    return make


def pytest_report_header(config):
    from django.conf import settings

    database = settings.DATABASES["default"]
    return f"database: {database['ENGINE'].rsplit('.', 1)[-1]} {database.get('HOST') or ''}"


@pytest.fixture(scope="session")
def standin_psc_process(live_server, tmp_path_factory):
    from tests.psc_standin import start_standin

    psc = start_standin(live_server.url, tmp_path_factory.mktemp("psc") / "psc.log")
    yield psc
    psc.process.terminate()
    psc.process.wait(timeout=10)


@pytest.fixture
def standin_psc(standin_psc_process, settings):
    """The portal configured for the running stand-in PSC."""
    for name, value in standin_psc_process.settings().items():
        setattr(settings, name, value)
    return standin_psc_process


@pytest.fixture
def demo_mailboxes(transactional_db):
    from django.core.management import call_command

    with open(os.devnull, "w") as quiet:
        call_command("import_mailboxes", "deploy/demo/mailboxes.csv", stdout=quiet)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's Chromium (Playwright's own download is not available here), with every name
    but loopback unresolvable so the browser makes no outside lookups."""
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "args": ["--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "locale": "fr-FR"}  # the professionals' browsers


@pytest.fixture
def professional(db, django_user_model):
    """Claire Martin, doctor, holder of a personal mailbox, logged in through PSC before."""
    from enrolment.models import Mailbox, Membership, Professional

    user = django_user_model.objects.create_user("psc-899700000001")
    person = Professional.objects.create(
        national_id="899700000001", user=user, given_name="Claire", family_name="Martin"
    )
    mailbox = Mailbox.objects.create(address="claire.martin@demo.mssante.fr")
    Membership.objects.create(mailbox=mailbox, professional=person)
    return person


@pytest.fixture
def professional_client(client, professional):
    """A browser session of the professional, with a PSC login just now."""
    import time

    client.force_login(professional.user)
    session = client.session
    session["psc_auth_time"] = int(time.time())
    session.save()
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


@pytest.fixture
def moved_clock(monkeypatch):
    """The verifier's clock, moved by the test: clock.advance(600) is ten minutes later;
    clock.stop() holds it where it is (a test whose figures depend on elapsed time must not
    depend on how fast the machine runs it)."""
    import time as _time

    from enrolment import clock as verifier_clock

    class Clock:
        offset = 0.0
        stopped_at = None

        def now(self):
            return (self.stopped_at or _time.time()) + self.offset

        def advance(self, seconds):
            self.offset += seconds

        def stop(self):
            self.stopped_at = _time.time()

    moved = Clock()
    monkeypatch.setattr(verifier_clock, "now", moved.now)
    return moved


@pytest.fixture
def page(page):
    """pytest-playwright's page, failing the test on any Content-Security-Policy violation."""
    from tests.browser_tools import csp_violations

    violations = csp_violations(page)
    yield page
    assert violations == []


@pytest.fixture(scope="session", autouse=True)
def watched_secrets():
    """Record every seed, password, code and staff enrolment token the suite uses, and every
    log line of this process, for tests/test_zz_logs.py."""
    import logging

    from django.contrib.auth import base_user, hashers

    from enrolment import models, staff_tokens, totp, verifier
    from tests import mail_fixtures, secret_watch

    patch = pytest.MonkeyPatch()
    new_seed, make_password, code = seeds.new_seed, hashers.make_password, totp.totp
    patch.setattr(seeds, "new_seed", lambda: secret_watch.watch_seed(new_seed()))
    patch.setattr(totp, "totp", lambda *a, **k: secret_watch.watch_code(code(*a, **k)))
    issue = staff_tokens.issue

    def watched_issue(user):
        token, row = issue(user)
        secret_watch.watch_token(token)
        return token, row

    patch.setattr(staff_tokens, "issue", watched_issue)

    def watched_make_password(password, *args, **kwargs):
        secret_watch.watch_password(password)
        return make_password(password, *args, **kwargs)

    # Each module that imported make_password by name holds its own reference.
    for module in (hashers, base_user, models, verifier, mail_fixtures):
        patch.setattr(module, "make_password", watched_make_password)
    handler = secret_watch.start_capturing_logs()
    yield secret_watch
    patch.undo()
    logging.getLogger().removeHandler(handler)
    handler.close()
    secret_watch.remove_logs()
