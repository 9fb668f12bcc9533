from django.db import migrations, models


def wait_for_locks_briefly(apps, schema_editor):
    # The bucket table is on every mail login's path: adding a nullable column takes its lock
    # for an instant. Waiting for it behind a long query would queue the logins; give up after
    # 5 s instead, and run the migration again.
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET LOCAL lock_timeout = '5s'")


class Migration(migrations.Migration):
    dependencies = [
        ("enrolment", "0006_refusals_remembered"),
    ]

    operations = [
        migrations.RunPython(wait_for_locks_briefly, migrations.RunPython.noop),
        migrations.AddField(
            model_name="addressthrottle",
            name="refused_at",
            field=models.FloatField(blank=True, null=True),
        ),
    ]
