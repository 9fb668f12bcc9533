"""The domain: professionals, their mailboxes, TOTP devices, mail sessions and the audit trail."""

import uuid

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import connection, models
from django.db.models import Q
from django.db.models.signals import post_delete, pre_delete, pre_save
from django.dispatch import receiver
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables
from django_otp.models import Device as OTPDevice
from django_otp.models import ThrottlingMixin, TimestampMixin

from enrolment import clock, seeds, totp


class Professional(models.Model):
    """A health professional, known by the national id that Pro Santé Connect gives
    (SubjectNameID: "8" + RPPS or "0" + ADELI). Mailbox imports create the row before the
    first login; the first PSC login links it to a Django user."""

    national_id = models.CharField(_("national id"), max_length=32, unique=True)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="professional",
    )
    given_name = models.CharField(_("given name"), max_length=150, blank=True)
    family_name = models.CharField(_("family name"), max_length=150, blank=True)
    # Only the claims a later step needs (e.g. SubjectRefPro), never the tokens.
    psc_claims = models.JSONField(default=dict, blank=True)
    last_login_at = models.DateTimeField(null=True, blank=True)
    last_login_method = models.CharField(max_length=32, blank=True)
    # Django password-hash format (Argon2id); empty until the professional sets one.
    mail_password = models.CharField(max_length=255, blank=True)
    mail_password_changed_at = models.DateTimeField(null=True, blank=True)
    # Set when the helpdesk resets the device: enrolling again needs a PSC login after it.
    access_reset_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["family_name", "given_name", "national_id"]

    def __str__(self):
        name = f"{self.given_name} {self.family_name}".strip()
        return f"{name} ({self.national_id})" if name else self.national_id

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        if not self.is_active:
            self.end_mail_sessions("professional_deactivated")

    def set_mail_password(self, raw_password: str) -> None:
        """Hash with the first of PASSWORD_HASHERS (Argon2id) and end every mail session,
        which the old password opened."""
        self.mail_password = make_password(raw_password)
        self.mail_password_changed_at = timezone.now()
        self.save(update_fields=["mail_password", "mail_password_changed_at"])
        self.end_mail_sessions("password_changed")

    def end_mail_sessions(self, reason: str) -> int:
        return self.mail_sessions.filter(revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_reason=reason
        )


class Mailbox(models.Model):
    class Kind(models.TextChoices):
        PERSONAL = "personal", _("personal")
        ORGANISATIONAL = "organisational", _("organisational")

    # Stored case-folded (see normalise_address), so lookups are exact matches on an index.
    address = models.CharField(_("address"), max_length=254, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.PERSONAL)
    is_active = models.BooleanField(default=True)
    members = models.ManyToManyField(Professional, through="Membership", related_name="mailboxes")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["address"]
        verbose_name_plural = "mailboxes"

    def __str__(self):
        return self.address

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        if not self.is_active:
            self.mail_sessions.filter(revoked_at__isnull=True).update(
                revoked_at=timezone.now(), revoked_reason="mailbox_deactivated"
            )

    @staticmethod
    def normalise_address(address: str) -> str:
        return address.strip().casefold()


class Membership(models.Model):
    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="memberships")
    professional = models.ForeignKey(
        Professional, on_delete=models.CASCADE, related_name="memberships"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "professional"], name="one_membership")
        ]

    def __str__(self):
        return f"{self.professional.national_id} → {self.mailbox.address}"


@receiver(pre_delete, sender="enrolment.Device")  # defined below
def end_sessions_of_a_removed_device(sender, instance, **kwargs):
    # The device's row lock, held until the deletion commits (pre_delete runs in its
    # transaction): a mail login claims its code by updating that row, so one in flight
    # either committed its session before this revocation, which ends it, or waits and
    # then finds no device. Without the lock, a session made between the revocation and
    # the deletion's own SET NULL stayed live, its device gone. Its sessions' locks first:
    # the verifier's refusals lock sessions, then the device; the same order, no deadlock.
    sessions = MailSession.objects.filter(device_id=instance.pk)
    list(sessions.select_for_update().values_list("pk"))
    list(Device.objects.select_for_update().filter(pk=instance.pk).values_list("pk"))
    MailSession.objects.filter(device_id=instance.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_reason="device_removed"
    )


@receiver(post_delete, sender=Membership)
def end_sessions_of_a_removed_member(sender, instance, **kwargs):
    _end_member_sessions(instance.mailbox_id, instance.professional_id)


@receiver(pre_save, sender=Membership)
def end_sessions_of_a_replaced_member(sender, instance, **kwargs):
    """A membership handed to someone else (the admin's inline allows it) removes the
    previous member: their sessions on that mailbox end as if it had been deleted."""
    if instance.pk is None:
        return
    before = Membership.objects.filter(pk=instance.pk).values_list("mailbox_id", "professional_id")
    previous = before.first()
    if previous is not None and previous != (instance.mailbox_id, instance.professional_id):
        _end_member_sessions(*previous)


def _end_member_sessions(mailbox_id, professional_id) -> None:
    MailSession.objects.filter(
        mailbox_id=mailbox_id, professional_id=professional_id, revoked_at__isnull=True
    ).update(revoked_at=timezone.now(), revoked_reason="membership_removed")


class Device(ThrottlingMixin, TimestampMixin, OTPDevice):
    """A TOTP seed on one person's phone, encrypted at rest (enrolment/seeds.py).

    A django-otp Device, so staff login and django-otp's throttling work with it, but the seed
    never lies in clear in a column: only its AES-GCM ciphertext, under the key named key_id.
    """

    class Algorithm(models.TextChoices):
        SHA1 = "sha1", "SHA1"
        SHA256 = "sha256", "SHA256"
        SHA512 = "sha512", "SHA512"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    key_id = models.CharField(max_length=32, db_index=True)
    nonce = models.BinaryField(max_length=seeds.NONCE_BYTES)
    ciphertext = models.BinaryField(max_length=seeds.SEED_BYTES + 64)
    algorithm = models.CharField(max_length=8, choices=Algorithm.choices, default=Algorithm.SHA1)
    digits = models.PositiveSmallIntegerField(default=6)
    period = models.PositiveSmallIntegerField(default=30)
    # Steps the phone's clock runs ahead (+) or behind (-), learned at enrolment.
    drift = models.SmallIntegerField(default=0)
    # The newest time step accepted: a code is accepted only for a newer step (RFC 6238 §5.2).
    last_t = models.BigIntegerField(default=-1)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    pending_until = models.DateTimeField(null=True, blank=True)
    # The mail-session digest of the last refused string: a mail client retrying the same
    # stale string all day is not guessing, and must not grow the back-off.
    last_failed_digest = models.CharField(max_length=64, blank=True)

    class Meta:
        constraints = [
            # Re-enrolment: the pending device replaces the old one only once confirmed.
            models.UniqueConstraint(
                fields=["user"], condition=Q(confirmed=True), name="one_confirmed_device"
            )
        ]

    def associated_data(self) -> bytes:
        # Binds the ciphertext to this row and its owner: copied to another device, or the row
        # handed to another user, it no longer decrypts.
        return f"totp-seed:v1:{self.uuid}:{self.user_id}".encode()

    def set_seed(
        self, seed: bytes, keyring: seeds.Keyring | None = None, checked: bool = False
    ) -> None:
        """Seal under the active key, which the database must know as that key and not as a
        dropped one (SeedKey.check_sealable, unless the caller ``checked`` in this same
        transaction); call it in the transaction that saves the row."""
        keyring = keyring or seeds.load_keyring()
        if not checked:
            SeedKey.check_sealable(keyring)
        sealed = keyring.seal(seed, self.associated_data())
        self.key_id, self.nonce, self.ciphertext = sealed.key_id, sealed.nonce, sealed.ciphertext

    def seed(self, keyring: seeds.Keyring | None = None) -> bytes:
        """The seed in clear, for this call only. Raises SeedDecryptionError."""
        sealed = seeds.SealedSeed(self.key_id, bytes(self.nonce), bytes(self.ciphertext))
        return (keyring or seeds.load_keyring()).open(sealed, self.associated_data())

    # Django templates call a method without arguments: a {{ device.seed }} would render the
    # seed in clear. They call none marked so.
    seed.alters_data = True

    @sensitive_variables("seed", "code")
    def match_step(self, code: str, unix_time: float | None = None, tolerance: int = 1):
        """The time step that ``code`` belongs to, within ``tolerance`` steps of the phone's
        expected clock, or None. Raises SeedDecryptionError or KeyringError when the seed
        cannot be opened here: no answer, rather than a wrong code counted against its owner
        (portal/unavailable.py answers for the pages, the verifier fails temporarily)."""
        seed = self.seed()
        now = clock.now() if unix_time is None else unix_time
        expected = totp.time_step(now, self.period) + self.drift
        steps = range(expected - tolerance, expected + tolerance + 1)
        return totp.find_step(seed, code, steps, self.digits, self.algorithm)

    def claim_step(self, step: int) -> bool:
        """Record ``step`` as used, unless this or a newer step already was. Atomic across
        workers and machines: the database decides which of two concurrent claims wins."""
        claimed = Device.objects.filter(pk=self.pk, last_t__lt=step).update(
            last_t=step, last_used_at=timezone.now()
        )
        if claimed:
            self.last_t = step
        return bool(claimed)

    def verify_token(self, token) -> bool:
        """django-otp's interface: a fresh code for a newer step, claimed once."""
        step = self.match_step(str(token))
        return step is not None and step > self.last_t and self.claim_step(step)

    def get_throttle_factor(self):
        return 1


class MailSession(models.Model):
    """A verified mail login that the same client may reuse (DESIGN §5.2): mail clients open
    parallel connections and reconnect with their cached password+code long after 30 seconds."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="mail_sessions")
    professional = models.ForeignKey(
        Professional, on_delete=models.CASCADE, related_name="mail_sessions"
    )
    # Kept, revoked, when the device goes (a new phone, a reset): the mail clients that keep
    # retrying their cached strings are then recognised and refused without counting as
    # guesses, which would otherwise grow the professional's back-off.
    device = models.ForeignKey(
        Device, null=True, on_delete=models.SET_NULL, related_name="mail_sessions"
    )
    # HMAC of the mailbox and the exact credential string under a server key: never the
    # credential itself. The hot lookup reads this table alone (mail_sessions.sessions_for):
    # whatever should end a session (new password, device reset, deactivation, removal from
    # a mailbox) revokes or deletes it when it happens.
    credential_digest = models.CharField(max_length=64)
    national_id = models.CharField(max_length=32, default="")  # who, for the audit of a hit
    client_network = models.CharField(max_length=64)
    protocol = models.CharField(max_length=16)
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=64, blank=True)
    # When this string was last refused (its session over): a mail client still retrying it
    # keeps the row from the purge, so its retries stay recognised and are never counted.
    last_refused_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["credential_digest", "mailbox"])]

    def __str__(self):
        return f"{self.mailbox} {self.protocol} {self.client_network}"

    @property
    def client_shown(self) -> str:
        """The client's address as a person reads it: 192.0.2.7, not 192.0.2.7/32; a wider
        network (MAIL_SESSION_PREFIX_V4/_V6) as a network."""
        address, _, prefix = self.client_network.partition("/")
        whole = {"32": ":" not in address, "128": ":" in address}
        return address if whole.get(prefix) else self.client_network


class SeedKey(models.Model):
    """Each key id that sealed a seed, with its fingerprint, and when it was dropped: what the
    nodes' keyrings (files, each its own) must agree on. A node with an out-of-date keyring
    refuses to seal under a key dropped meanwhile (its seeds would be unreadable once the
    file reaches it), and one with other bytes under a known id refuses too."""

    key_id = models.CharField(max_length=32, primary_key=True)
    check_value = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    dropped_at = models.DateTimeField(null=True, blank=True)

    # seed_key drop takes it alone, sealers share it (PostgreSQL advisory lock): a drop waits
    # for every seal in flight to commit, then counts the rows, and later seals see the drop.
    LOCK = 0x5EED

    def __str__(self):
        return self.key_id

    @classmethod
    def take_turn(cls, alone: bool) -> None:
        if connection.vendor == "postgresql":  # SQLite runs one writer at a time anyway
            function = "pg_advisory_xact_lock" if alone else "pg_advisory_xact_lock_shared"
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT {function}(%s)", [cls.LOCK])

    @classmethod
    def check_sealable(cls, keyring: seeds.Keyring) -> None:
        """Raises KeyringError when the active key was dropped or is not the key of its id.
        Call it in the transaction that saves what it seals: the drop waits for that."""
        if not connection.in_atomic_block:  # the shared lock would end with this statement
            raise RuntimeError("seal a seed inside the transaction that saves it")
        cls.take_turn(alone=False)
        known = cls._known(keyring, keyring.active_id)
        if known is None:  # an id no seed was sealed under: this keyring's key is the one
            cls._record(keyring, keyring.active_id)
            known = cls.objects.get(key_id=keyring.active_id)
        if known.dropped_at is not None:
            raise seeds.KeyringError(
                f"the active key {known.key_id!r} of this node's keyring was dropped on "
                f"{known.dropped_at:%Y-%m-%d %H:%M} UTC: copy the current keyring here"
            )
        if not constant_time_compare(known.check_value, keyring.check_value(known.key_id)):
            raise seeds.KeyringError(cls._differs(known.key_id))

    @classmethod
    def differing(cls, keyring: seeds.Keyring) -> list[str]:
        """The ids of this keyring's keys that are not the keys of those ids that sealed seeds."""
        differing = []
        for key_id in sorted(keyring.keys):
            try:
                known = cls._known(keyring, key_id)
            except seeds.KeyringError:
                differing.append(key_id)
                continue
            if known and not constant_time_compare(known.check_value, keyring.check_value(key_id)):
                differing.append(key_id)
        return differing

    @classmethod
    def active_key_dropped(cls, keyring: seeds.Keyring) -> bool:
        return cls.objects.filter(key_id=keyring.active_id, dropped_at__isnull=False).exists()

    @classmethod
    def _known(cls, keyring: seeds.Keyring, key_id: str) -> "SeedKey | None":
        """The record of key_id, made now if seeds sealed under that id before the table
        existed open with this keyring's key (raises KeyringError if they do not): else the
        first node to seal or answer readiness after the upgrade would make its own bytes
        the reference, right or wrong. None for an id that no seed uses and nobody recorded."""
        known = cls.objects.filter(key_id=key_id).first()
        if known is not None:
            return known
        sealed = Device.objects.filter(key_id=key_id).first()
        if sealed is None:
            return None
        try:
            sealed.seed(keyring)
        except seeds.SeedDecryptionError:
            raise seeds.KeyringError(cls._differs(key_id)) from None
        cls._record(keyring, key_id)
        return cls.objects.get(key_id=key_id)

    @classmethod
    def _record(cls, keyring: seeds.Keyring, key_id: str) -> None:
        check_value = keyring.check_value(key_id)
        cls.objects.bulk_create(
            [cls(key_id=key_id, check_value=check_value)], ignore_conflicts=True
        )

    @staticmethod
    def _differs(key_id: str) -> str:
        return (
            f"this node's key {key_id!r} is not the key of that id that sealed seeds: copy the "
            "keyring file from a node that works, never make a key anew under an id"
        )


class ApiKey(models.Model):
    """A caller of the JSON verify API (a Dovecot, another proxy). Only a SHA-256 of the token
    is stored: tokens are 256 random bits, so a fast hash is enough and lookups stay cheap."""

    name = models.CharField(max_length=64, unique=True)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return self.name


class StaffEnrolmentToken(models.Model):
    """The one-time token a staff account needs, besides its password, to enrol its phone:
    given out of band by whoever created the account or reset its phone (manage.py staff), so
    that a password alone never becomes a second factor (enrolment/staff_tokens.py). Only a
    SHA-256 of the token is kept (120 random bits: a fast hash is enough)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="staff_enrolment_token"
    )
    token_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    # When a browser session presented it: that session may enrol, no other one.
    presented_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.user} until {self.expires_at:%Y-%m-%d %H:%M}"


class AddressThrottle(models.Model):
    """A token bucket per client address: every failed mail login spends a token; an address
    with none left is refused before any password hashing (DESIGN §5.4)."""

    address = models.CharField(max_length=64, primary_key=True)
    tokens = models.FloatField()
    updated_at = models.FloatField()  # unix time of the last refill
    # The string refused last: the same one again within a token's refill time is not
    # charged again (a client's connections retrying what it cached must not drain the
    # address for everyone behind it; a guesser learns nothing from repeating a string).
    last_digest = models.CharField(max_length=64, blank=True, default="", db_default="")
    # When that string was last refused after a hash (unix time); None when it failed
    # temporarily instead: sent again within seconds, it is refused again before the hash.
    refused_at = models.FloatField(null=True, blank=True)

    def __str__(self):
        return f"{self.address}: {self.tokens:.1f}"


class AuditEvent(models.Model):
    """One row of the append-only audit trail. Details never hold a secret."""

    class ActorKind(models.TextChoices):
        PROFESSIONAL = "professional", _("professional")
        STAFF = "staff", _("staff")
        SERVICE = "service", _("service")
        SYSTEM = "system", _("system")

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_kind = models.CharField(max_length=16, choices=ActorKind.choices)
    actor = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=254, blank=True)
    outcome = models.CharField(max_length=32, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)
    # Integrity (enrolment/audit.py): a random row id and a keyed MAC of it and the content.
    uid = models.CharField(max_length=32, blank=True)
    mac = models.CharField(max_length=64, blank=True)
    # The id of the key that made the MAC (enrolment/audit_keys.py). A default in the
    # database too: a node still running the previous version inserts rows without it.
    mac_key = models.CharField(max_length=16, default="legacy", db_default="legacy")

    class Meta:
        ordering = ["id"]
        # For the helpdesk's page (a professional's logins, actions on them), the exports and
        # the summary; each costs a little on every insert, so no more than these.
        indexes = [
            models.Index(fields=["actor"]),
            models.Index(fields=["target"]),
            models.Index(fields=["action", "at"]),
        ]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.outcome}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ValueError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("audit events are append-only; the retention purge removes old rows")


class AuditSeal(models.Model):
    """A sealed range of the audit trail (enrolment/audit_chain.py): which row ids it holds,
    a digest of their MACs, and a MAC that also covers the previous seal's, so that a row or
    a seal removed, added or changed is found by ``manage.py verify_audit``."""

    seq = models.PositiveIntegerField(unique=True)
    first_id = models.BigIntegerField()
    last_id = models.BigIntegerField()
    count = models.PositiveIntegerField()
    # Ids in [first_id, last_id] that no row had when sealed (rolled-back inserts).
    gaps = models.JSONField(default=list, blank=True)
    digest = models.CharField(max_length=64)
    last_at = models.DateTimeField()
    sealed_at = models.DateTimeField(default=timezone.now)
    previous_mac = models.CharField(max_length=64, blank=True)
    mac = models.CharField(max_length=64)
    mac_key = models.CharField(max_length=16, default="legacy", db_default="legacy")
    # Set by the retention purge, with its own MAC: these rows are gone on purpose.
    purged_at = models.DateTimeField(null=True, blank=True)
    purge_mac = models.CharField(max_length=64, blank=True)
    purge_mac_key = models.CharField(max_length=16, blank=True, default="", db_default="")

    class Meta:
        ordering = ["seq"]

    def __str__(self):
        return f"seal {self.seq}: rows {self.first_id}-{self.last_id}"
