"""The decision on one IMAP/SMTP login: password followed by the current code (DESIGN §5).

No HTTP here: the nginx auth_http and JSON adapters (enrolment/verify_views.py) call verify()
and translate its Decision. The order of the checks is what keeps it fast and fair:

1. a mail session for this exact string from this network: one SELECT and one HMAC, no write
   (a string whose session is over or elsewhere goes on, as a new login would);
2. the client address's bucket: an address spraying guesses, or repeating the string it was
   refused last, is refused before any hashing;
3. the code, against the devices of the mailbox's members (HMACs): for an organisational
   mailbox it tells which member is logging in;
4. one Argon2id hash of the password (a dummy hash when there is nobody to check, so every
   refusal costs the same time), then that professional's back-off, enforced silently;
5. the code's time step claimed under a row lock on the device, and a mail session opened:
   on PostgreSQL one statement, which claims, opens and audits in one round trip and commits.

Any error on the way is a temporary failure, never a success.
"""

import enum
import functools
import json
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.hashers import check_password, identify_hasher, make_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connections, transaction
from django.views.decorators.debug import sensitive_variables

from enrolment import audit, clock, indicators, mail_sessions, seeds, throttle
from enrolment.credential import split_credential
from enrolment.models import AuditEvent, Device, Mailbox, MailSession, Membership, Professional

logger = logging.getLogger(__name__)

MAX_SECRET_LENGTH = 1024


class Outcome(enum.Enum):
    OK = "ok"
    REJECT = "reject"
    TEMPFAIL = "tempfail"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str  # for the audit trail and the logs; never shown to the client
    national_id: str = ""  # who logged in, or whose factor was right in a failure
    retry_after: int = 0
    audited: bool = True  # False for the decisions recorded in aggregate (session hits)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


_dummy_hash = None


def dummy_hash() -> str:
    """A hash of nothing, checked when there is no real one, so that an unknown mailbox costs
    the same Argon2 time as a wrong password (as contrib.auth does, ticket #20760)."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = make_password("dummy password for equal timing")
    return _dummy_hash


@sensitive_variables("secret")
def verify(mailbox: str, secret: str, client_ip: str, protocol: str, caller: str = "") -> Decision:
    started = time.perf_counter()
    address = Mailbox.normalise_address(mailbox)
    # The caller's word for the protocol goes into rows: printable, and short.
    protocol = "".join(character for character in protocol[:16] if character.isprintable())
    try:
        decision = _decide(address, secret, client_ip, protocol, caller)
    except Exception:
        logger.exception("verify: internal error; refusing with a temporary failure")
        decision = Decision(Outcome.TEMPFAIL, "internal_error")
    try:  # a metrics file that cannot be written must not turn a decision into a 500
        indicators.observe_login(decision.outcome.value, protocol, time.perf_counter() - started)
    except Exception:
        logger.exception("verify: the login could not be counted in the metrics")
    return decision


@sensitive_variables("secret")
def _decide(address: str, secret: str, client_ip: str, protocol: str, caller: str) -> Decision:
    try:
        network, source = mail_sessions.network_and_source(client_ip)
    except ValueError:
        network = source = None
    if not _well_formed(address, secret):
        return _refuse_malformed(Attempt(address, client_ip, protocol, caller, "", "", ""), source)
    if source is None:
        decision = Decision(Outcome.REJECT, "bad_client_address", retry_after=1)
        _audit(decision, Attempt(address, client_ip, protocol, caller, "", "", ""))
        return decision
    digest = mail_sessions.credential_digest(address, secret)

    # The hot path, outside any transaction: a live session for this string is a hit.
    sessions, bucket = mail_sessions.first_look(digest, source)
    session = mail_sessions.find_live(sessions, network)
    if session is not None and not mail_sessions.needs_touch(session):
        return Decision(Outcome.OK, "session", session.national_id)
    attempt = Attempt(address, client_ip, protocol, caller, network, source, digest, bool(sessions))
    if session is not None:  # live, and its "last seen" is a minute old: written, audited
        with transaction.atomic():
            mail_sessions.touch(session)
            decision = Decision(Outcome.OK, "session", session.national_id)
            _audit(decision, attempt)
        return decision
    # An address over budget, or repeating the string it was refused last, is refused before
    # any hashing, mostly without a write.
    wait = throttle.address_retry_after(bucket)
    if wait or not throttle.may_hash_again(bucket, digest, source):
        decision = _refused_before_hashing(source, wait)
        if decision.audited:
            _audit(decision, attempt)
        return decision
    # A string accepted once whose session is over, revoked or elsewhere (a mail client
    # retrying all day what it cached) takes a new login's whole path and price too: a
    # cheaper refusal would tell a guesser that the password with that old code was right.
    return _new_login(attempt, secret)


@sensitive_variables("secret")
def _well_formed(address: str, secret: str) -> bool:
    return (
        bool(address)
        and len(address) <= 254
        and address.isascii()  # casefolding other scripts could map onto another mailbox
        and address.isprintable()  # NUL and other controls: no mailbox has them
        and bool(secret)
        and len(secret) <= MAX_SECRET_LENGTH
    )


def _refuse_malformed(attempt: "Attempt", source: str | None) -> Decision:
    """No login can come from such a request, but it is a failure like any other: it spends
    the address's budget, and an address over budget is refused as throttled, its refusals
    audited once a minute, not one row and one commit each."""
    if source is not None and (wait := throttle.address_wait(source)):
        decision = _refused_before_hashing(source, wait)
        if decision.audited:
            _audit(decision, attempt)
        return decision
    with transaction.atomic():
        wait = throttle.spend_address_token(source) if source is not None else 0
        decision = Decision(Outcome.REJECT, "malformed", retry_after=max(1, wait))
        _audit(decision, attempt)
    return decision


@dataclass(frozen=True)
class Attempt:
    """One login attempt as the verifier sees it, the secret aside."""

    address: str
    client_ip: str
    protocol: str
    caller: str
    network: str  # what a mail session is bound to
    source: str  # whose throttle budget a failure spends
    digest: str  # of the exact credential: the mail-session key
    seen_before: bool = False  # this exact string opened a session once


def _refused_before_hashing(source: str, wait: int) -> Decision:
    """An address over budget (``wait`` seconds), or repeating the string it was refused
    last (the wait any refusal from it gets), audited once a minute (audit.due)."""
    reason = "address_throttled" if wait else "refused_again"
    audited = audit.due(source, reason)
    return Decision(Outcome.REJECT, reason, retry_after=max(1, wait), audited=audited)


@dataclass
class Candidate:
    """A member of the mailbox with a confirmed device: who a code may belong to."""

    device: Device
    professional: Professional


@sensitive_variables("secret", "credential")
def _new_login(attempt: Attempt, secret: str) -> Decision:
    credential = split_credential(secret, separator=settings.VERIFY_CODE_SEPARATOR)
    mailbox, candidates = _candidates(attempt.address)
    now = clock.now()

    # A seed under a key the keyring lacks cannot be checked (nor tried: each try would log
    # an error, and such requests may come without cost to their sender).
    keys = seeds.load_keyring().keys
    openable = [candidate for candidate in candidates if candidate.device.key_id in keys]
    matched, step, unopened = _code_owner(credential, openable, now)
    unopened += len(candidates) - len(openable)
    if matched is None and unopened:
        return _seed_key_missing(attempt, beside_an_openable_seed=len(candidates) > unopened)
    # Whose login this is: the code's owner, else the holder of a personal mailbox.
    who = matched
    if who is None and mailbox and mailbox.kind == Mailbox.Kind.PERSONAL and len(candidates) == 1:
        who = candidates[0]

    # Backing off or not, the hash is checked and a refusal answers as any other: a back-off
    # that showed would tell a guesser that the password they just tried was right.
    backing_off = who is not None and throttle.professional_retry_after(who.device) > 0
    password_ok = _check_password(
        credential.password if credential else secret, who.professional if who else None
    )
    if password_ok and matched is not None and not backing_off:
        if step <= matched.device.last_t:  # spent already, by a parallel login or long ago
            return _spent_code(attempt, matched, after_claim=False)
        decision = _claim_and_open(attempt, mailbox, matched, step)
        if decision.reason == "new_login":
            _rehash_if_outdated(matched.professional, credential.password)
        return decision
    with transaction.atomic():
        decision = _failure(
            attempt, credential, mailbox, candidates, who, matched, step, password_ok, backing_off
        )
        _audit(decision, attempt)
    return decision


@sensitive_variables("credential")
def _code_owner(credential, candidates: list[Candidate], now: float):
    """The candidate whose device the code is from and its time step, or (None, None); and
    how many seeds did not open on the way, though their key id is in the keyring (a key of
    that id but other bytes, a row altered): the code may be theirs."""
    unopened = 0
    if credential is not None:
        for candidate in candidates:
            try:
                step = candidate.device.match_step(credential.code, now)
            except (seeds.SeedDecryptionError, seeds.KeyringError) as exc:
                unopened += 1
                if audit.due(str(candidate.device.uuid), "seed_unopened"):  # not every try
                    logger.error("device %s is unusable: %s", candidate.device.uuid, exc)
                continue
            if step is not None:
                return candidate, step, unopened
    return None, None, unopened


# The mailbox and its members' devices, in one hand-written SELECT read with a plain cursor:
# this runs for every new login, and the ORM's version (four models, select_related) cost
# more than all the rest; even Device.objects.raw() cost half as much again as the query.
# One statement whether the mailbox is unknown (no row), has nobody to check (one row of
# NULLs beside the mailbox) or has devices, so that the statements do not tell which.
CANDIDATES_SQL = """
    SELECT m.id, m.kind, p.id, p.national_id, p.mail_password, {device_columns}
      FROM {mailbox} m
      LEFT JOIN ({membership} ms
                 JOIN {professional} p ON p.id = ms.professional_id AND p.is_active
                 JOIN {device} d ON d.user_id = p.user_id AND d.confirmed)
        ON ms.mailbox_id = m.id
     WHERE m.address = %s AND m.is_active
     ORDER BY d.id
"""


@functools.cache
def _device_fields() -> tuple[str, ...]:
    return tuple(field.attname for field in Device._meta.concrete_fields)


@functools.cache
def _candidates_sql() -> str:
    columns = ", ".join(f"d.{Device._meta.get_field(name).column}" for name in _device_fields())
    return CANDIDATES_SQL.format(
        device_columns=columns,
        device=Device._meta.db_table,
        professional=Professional._meta.db_table,
        membership=Membership._meta.db_table,
        mailbox=Mailbox._meta.db_table,
    )


def _device_from_row(connection, values) -> Device:
    """A Device from its columns as the cursor returned them, converted as the ORM would (on
    SQLite a UUID or a datetime comes back as text)."""
    converted = []
    for name, value in zip(_device_fields(), values, strict=True):
        column = Device._meta.get_field(name).get_col(Device._meta.db_table)
        converters = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        for converter in converters:
            value = converter(value, column, connection)
        converted.append(value)
    return Device.from_db(connection.alias, _device_fields(), converted)


def _candidates(address: str) -> tuple[Mailbox | None, list[Candidate]]:
    connection = connections[Device.objects.db]
    with connection.cursor() as cursor:
        cursor.execute(_candidates_sql(), [address])
        rows = cursor.fetchall()
    if not rows:
        return None, []
    mailbox_id, mailbox_kind = rows[0][:2]
    candidates = []
    for row in rows:
        pro_id, national_id, mail_password = row[2:5]
        if pro_id is None:  # the mailbox alone: nobody with a confirmed device
            continue
        professional = Professional(id=pro_id, national_id=national_id, mail_password=mail_password)
        professional._state.adding = False
        candidates.append(Candidate(_device_from_row(connection, row[5:]), professional))
    return Mailbox(id=mailbox_id, kind=mailbox_kind, address=address), candidates


def _seed_key_missing(attempt: Attempt, beside_an_openable_seed: bool) -> Decision:
    """A seed the keyring cannot open (a key dropped or not deployed yet, other bytes under
    its id, a damaged row), and the code
    matched none that it can: it may well be that seed's. A temporary failure, so the client
    retries and nobody's back-off grows; the row is left as it is, for when the key is back.
    Beside a seed that opens (a shared mailbox), temporary or not tells whether a code is
    another member's: then it spends the address's budget as a refusal does (a client's
    retries of one string once a refill time), and its retries fail temporarily again.
    Otherwise it tells nothing and costs nothing, and is audited once a minute per address,
    as the refusals made before any hash."""
    decision = Decision(Outcome.TEMPFAIL, "seed_key_missing")
    if beside_an_openable_seed:
        with transaction.atomic():
            throttle.spend_address_token(attempt.source, attempt.digest, refused=False)
            _audit(decision, attempt)
    elif audit.due(attempt.source, decision.reason):
        _audit(decision, attempt)
    return decision


@sensitive_variables("password")
def _check_password(password: str, professional: Professional | None) -> bool:
    """One Argon2id check, whatever happens, timed for the metrics."""
    started = time.perf_counter()
    try:
        return _argon2_check(password, professional)
    finally:
        indicators.HASH_SECONDS.observe(time.perf_counter() - started)


@sensitive_variables("password")
def _argon2_check(password: str, professional: Professional | None) -> bool:
    """Against the dummy hash when there is nobody to check. No rehash here: a second hash
    when the password is right would tell a guesser so, code right or not."""
    if professional is None or not professional.mail_password:
        check_password(password, dummy_hash())
        return False
    return check_password(password, professional.mail_password)


@sensitive_variables("password")
def _rehash_if_outdated(professional: Professional, password: str) -> None:
    """After a new login, with the operator's current Argon2id parameters (ARGON2_*). The
    login is committed by now: a failure here keeps the old hash, it does not refuse."""
    try:
        if identify_hasher(professional.mail_password).must_update(professional.mail_password):
            Professional.objects.filter(pk=professional.pk).update(
                mail_password=make_password(password)
            )
    except Exception:
        logger.exception("professional %s: rehash failed; the old hash stays", professional.pk)


def _claim_and_open(attempt: Attempt, mailbox, who: Candidate, step: int) -> Decision:
    """The conditional UPDATE is the claim: atomic across workers and machines, and it holds
    the device's row lock until its commit, so parallel first logins with one string take
    turns: the first claims the step and opens the session, the others wait, claim nothing,
    and find that session."""
    success = Decision(Outcome.OK, "new_login", who.professional.national_id)
    if _claim_open_and_audit(attempt, mailbox, who, step, success):
        return success
    return _spent_code(attempt, who, after_claim=True)


def _spent_code(attempt: Attempt, who: Candidate, after_claim: bool) -> Decision:
    """Right password, but the code's step was claimed already. By a parallel connection with
    this very string from this network: its session is there, a success. Else a replay, or
    a stale string retried: refused at a wrong password's price (the address's token and
    wait, the device's one UPDATE), and not a guess, so the back-off is not touched."""
    national_id = who.professional.national_id
    with transaction.atomic():
        if mail_sessions.find_live(mail_sessions.sessions_for(attempt.digest), attempt.network):
            decision = Decision(Outcome.OK, "session_parallel", national_id)
        else:
            retry_after = max(1, throttle.spend_address_token(attempt.source, attempt.digest))
            mail_sessions.note_refused(attempt.digest)
            if after_claim and _guess_recorded_since_read(who.device):
                # A parallel guess failed first: this login is inside the back-off it started.
                reason = "professional_throttled"
            else:
                reason = "session_ended_or_elsewhere" if attempt.seen_before else "code_reused"
                throttle.record_refusal(who.device, attempt.digest, guess=False)
            decision = Decision(Outcome.REJECT, reason, national_id, retry_after)
        _audit(decision, attempt)
    return decision


def _guess_recorded_since_read(device: Device) -> bool:
    now = Device.objects.filter(pk=device.pk).values_list("throttling_failure_count", flat=True)
    current = now.first()  # None: the device was reset meanwhile
    return current is None or current > device.throttling_failure_count


def _claim_open_and_audit(attempt: Attempt, mailbox, who: Candidate, step, success) -> bool:
    """Claims the step and, if it was free, opens the session and audits the success, all in
    one commit. False if the step was already claimed."""
    session = mail_sessions.new_session(
        mailbox, who.professional, who.device, attempt.digest, attempt.network, attempt.protocol
    )
    event = _audit_event(success, attempt)
    connection = connections[Device.objects.db]
    if connection.vendor == "postgresql":
        return _claim_open_and_audit_in_one_statement(connection, who.device, step, session, event)
    with transaction.atomic():
        if not _claim_step(connection, who.device, step, session.created_at):
            return False
        MailSession.objects.bulk_create([session])
        audit.insert(event)
    return True


# The claim also requires the back-off's count to be no higher than it was read before the
# hash: parallel guesses at the moment a back-off runs out are each checked, but once one of
# them was recorded as a failure, the others cannot succeed (one guess per back-off, not one
# per worker). A parallel success that reset the count to 0 does not stop this one.
CLAIM_SQL = """
    UPDATE {device} SET last_t = %s, last_used_at = %s, throttling_failure_count = 0,
           throttling_failure_timestamp = NULL, last_failed_digest = ''
     WHERE id = %s AND last_t < %s AND throttling_failure_count <= %s
"""


def _claim_step(connection, device: Device, step: int, now) -> bool:
    """The step, if no newer or equal one was accepted and no guess recorded meanwhile."""
    with connection.cursor() as cursor:
        cursor.execute(
            CLAIM_SQL.format(device=Device._meta.db_table),
            _claim_values(device, step, connection.ops.adapt_datetimefield_value(now)),
        )
        return cursor.rowcount == 1


def _claim_values(device: Device, step: int, now) -> list:
    return [step, now, device.pk, step, device.throttling_failure_count]


# A new login's three writes in one statement, so one round trip and (in autocommit) its own
# commit: every new login runs it, and on this path each statement and the commit cost as
# much as all the Python. The session and the audit row are inserted only if the claim
# updated the device's row.
CLAIM_OPEN_AND_AUDIT_SQL = """
    WITH claimed AS ({claim} RETURNING id),
    opened AS (
        INSERT INTO {session} ({session_columns})
        SELECT {session_values} FROM claimed RETURNING id
    )
    INSERT INTO {audit} ({audit_columns})
    SELECT {audit_values} FROM opened RETURNING id
"""

# The columns written, and the cast each parameter needs in a SELECT list (where PostgreSQL
# cannot infer a parameter's type from its column).
SESSION_COLUMNS = {
    "id": "uuid",
    "mailbox_id": "bigint",
    "professional_id": "bigint",
    "device_id": "bigint",
    "credential_digest": "text",
    "national_id": "text",
    "client_network": "text",
    "protocol": "text",
    "created_at": "timestamptz",
    "last_seen_at": "timestamptz",
    "expires_at": "timestamptz",
    "revoked_reason": "text",
}
AUDIT_COLUMNS = {
    "at": "timestamptz",
    "actor_kind": "text",
    "actor": "text",
    "action": "text",
    "target": "text",
    "outcome": "text",
    "client_ip": "inet",
    "details": "jsonb",
    "uid": "text",
    "mac": "text",
    "mac_key": "text",
}


@functools.cache
def _claim_open_and_audit_sql() -> str:
    def values(columns):
        return ", ".join(f"%s::{cast}" for cast in columns.values())

    return CLAIM_OPEN_AND_AUDIT_SQL.format(
        claim=CLAIM_SQL.format(device=Device._meta.db_table),
        session=MailSession._meta.db_table,
        session_columns=", ".join(SESSION_COLUMNS),
        session_values=values(SESSION_COLUMNS),
        audit=AuditEvent._meta.db_table,
        audit_columns=", ".join(AUDIT_COLUMNS),
        audit_values=values(AUDIT_COLUMNS),
    )


def _claim_open_and_audit_in_one_statement(connection, device, step, session, event) -> bool:
    session_values = [getattr(session, column) for column in SESSION_COLUMNS]
    audit_values = [getattr(event, column) for column in AUDIT_COLUMNS]
    audit_values[list(AUDIT_COLUMNS).index("details")] = json.dumps(event.details)
    claim_values = _claim_values(device, step, session.created_at)
    with connection.cursor() as cursor:
        cursor.execute(_claim_open_and_audit_sql(), claim_values + session_values + audit_values)
        return cursor.fetchone() is not None


def _failure(
    attempt, credential, mailbox, candidates, who, matched, step, password_ok, backing_off
):
    """The refusal, its reason for the audit, and what it spends. What the client is told
    depends on its address alone: the reason, and whether a factor was right, stay here."""
    # The statements of every refusal are those of a right password with a spent code
    # (_spent_code), whoever the mailbox has, so that their time tells nothing: its read of
    # the sessions, and the one UPDATE of a device (of none when nobody could be checked).
    mail_sessions.sessions_for(attempt.digest)
    retry_after = max(1, throttle.spend_address_token(attempt.source, attempt.digest))
    mail_sessions.note_refused(attempt.digest)
    if backing_off:
        reason = "professional_throttled"
    elif attempt.seen_before:
        reason = "session_ended_or_elsewhere"
    elif credential is None:
        reason = "no_code"
    elif mailbox is None:
        reason = "unknown_mailbox"
    elif not candidates:
        reason = "no_device"
    elif matched is None:
        reason = "wrong_code" if password_ok else "wrong_password_and_code"
    else:
        reason = "wrong_password"
    if who is None:
        throttle.record_refusal(None, attempt.digest, guess=False)
        return Decision(Outcome.REJECT, reason, retry_after=retry_after)
    # A code already used (seen over a shoulder) is not a right factor. Not counted either:
    # refusals during a back-off (the professional's own retries must not prolong it), and a
    # string that opened a session once (their mail clients retry those all day, and two of
    # them alternating would otherwise back their owner off for good).
    fresh_code = matched is not None and step > matched.device.last_t
    one_factor_right = password_ok or fresh_code
    guess = one_factor_right and not backing_off and not attempt.seen_before
    throttle.record_refusal(who.device, attempt.digest, guess)
    national_id = who.professional.national_id if one_factor_right or backing_off else ""
    return Decision(Outcome.REJECT, reason, national_id, retry_after=retry_after)


def _audit(decision: Decision, attempt: Attempt) -> None:
    audit.insert(_audit_event(decision, attempt))


def _audit_event(decision: Decision, attempt: Attempt) -> AuditEvent:
    return audit.event(
        actor_kind=AuditEvent.ActorKind.PROFESSIONAL
        if decision.national_id
        else AuditEvent.ActorKind.SERVICE,
        actor=decision.national_id or attempt.caller,
        action="mail.login",
        target=_auditable_name(attempt.address, decision),
        outcome=decision.outcome.value,
        client_ip=_valid_ip_or_none(attempt.client_ip),
        details={
            "protocol": attempt.protocol[:16],
            "reason": decision.reason,
            "via": attempt.caller,
        },
    )


# Refusals decided once a mailbox of the typed name was found (or a session of it).
MAILBOX_FOUND = frozenset(
    {
        "wrong_code",
        "wrong_password",
        "wrong_password_and_code",
        "no_device",
        "professional_throttled",
        "session_ended_or_elsewhere",
        "code_reused",
        "seed_key_missing",
    }
)


def _auditable_name(typed: str, decision: Decision) -> str:
    """What of the typed user name the trail keeps. People paste their password into the
    user name field: the name in full only when a mailbox has it (a login, or a refusal
    after finding it); else only the domain of an address (which still shows a spray of
    made-up names on one domain), and nothing of what is no address."""
    if len(typed) > 254:  # the column's size; validate_email takes up to 320
        return ""
    if decision.outcome is Outcome.OK or decision.reason in MAILBOX_FOUND:
        return typed
    try:
        validate_email(typed)
    except ValidationError:
        return ""
    return "@" + typed.rsplit("@", 1)[1]


def _valid_ip_or_none(client_ip: str):
    try:
        return mail_sessions.client_address(client_ip)
    except ValueError:
        return None
