import base64
import json
import os

import pytest
from django.contrib.auth import get_user_model

from enrolment import seeds
from enrolment.models import Device


def keyring_json(active: str, *key_ids: str) -> str:
    """A keyring with a fresh random key for each id; ``active`` among them."""
    keys = {key_id: base64.b64encode(os.urandom(32)).decode() for key_id in {active, *key_ids}}
    return json.dumps({"active": active, "keys": keys})


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("alice")


@pytest.fixture
def make_device(db):
    def make(user, seed=None, confirmed=True, keyring=None, **fields):
        device = Device(user=user, name="FreeOTP", confirmed=confirmed, **fields)
        device.set_seed(seed or seeds.new_seed(), keyring)
        device.save()
        return device

    return make


def pytest_report_header(config):
    from django.conf import settings

    database = settings.DATABASES["default"]
    return f"database: {database['ENGINE'].rsplit('.', 1)[-1]} {database.get('HOST') or ''}"
