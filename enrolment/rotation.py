"""Re-encrypting every stored seed under the keyring's active key, while the site runs."""

import logging
from dataclasses import dataclass

from django.db import transaction

from enrolment.models import Device, SeedKey
from enrolment.seeds import Keyring, SeedDecryptionError

logger = logging.getLogger(__name__)


@dataclass
class RotationResult:
    rotated: int = 0
    unreadable: int = 0  # rows whose seed cannot be opened with this keyring: left untouched
    changed_meanwhile: int = 0  # rows re-enrolled while we worked: already under a fresh seal


def rotate_to_active_key(keyring: Keyring, batch_size: int = 500) -> RotationResult:
    """Reseal, batch by batch, every device not under the active key.

    Each batch commits on its own, so an interrupted rotation keeps what it did and a second run
    finishes the rest. A row is rewritten only if it still holds the ciphertext we read, so a
    re-enrolment that happens meanwhile is never overwritten with the old seed.
    """
    result = RotationResult()
    after_pk = 0
    while True:
        batch = list(
            Device.objects.exclude(key_id=keyring.active_id)
            .filter(pk__gt=after_pk)
            .order_by("pk")[:batch_size]
        )
        if not batch:
            return result
        with transaction.atomic():
            SeedKey.check_sealable(keyring)  # once a batch, not once a row
            for device in batch:
                _reseal(device, keyring, result)
        after_pk = batch[-1].pk


def _reseal(device: Device, keyring: Keyring, result: RotationResult) -> None:
    try:
        seed = device.seed(keyring)
    except SeedDecryptionError as exc:  # one bad row must not stop the others, run after run
        logger.error("rotation: device %s left as it is: %s", device.uuid, exc)
        result.unreadable += 1
        return
    old_key_id, old_nonce = device.key_id, bytes(device.nonce)
    device.set_seed(seed, keyring, checked=True)
    written = Device.objects.filter(pk=device.pk, key_id=old_key_id, nonce=old_nonce).update(
        key_id=device.key_id, nonce=device.nonce, ciphertext=device.ciphertext
    )
    if written:
        result.rotated += 1
    else:
        result.changed_meanwhile += 1
