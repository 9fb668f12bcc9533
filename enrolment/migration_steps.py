"""Steps that migrations share. Keep them: applied migrations import them by name."""

from django.db import migrations


def _lock_timeout_5s(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET LOCAL lock_timeout = '5s'")


def wait_for_locks_briefly() -> migrations.RunPython:
    """Adding a column to a table on the logins' path takes its lock for an instant; waiting
    for it behind a long query would queue every login. Give up after 5 s instead (the
    migration is then simply run again)."""
    return migrations.RunPython(_lock_timeout_5s, migrations.RunPython.noop)
