from django.conf import settings
from django.contrib.auth.hashers import Argon2PasswordHasher


class ConfigurableArgon2Hasher(Argon2PasswordHasher):
    """Argon2id with the operator's parameters (settings ARGON2_*).

    The algorithm name stays "argon2", so hashes made with other parameters still verify, and
    Django's must_update() rehashes them at the next successful login.
    """

    @property
    def time_cost(self):
        return settings.ARGON2_TIME_COST

    @property
    def memory_cost(self):
        return settings.ARGON2_MEMORY_KIB

    @property
    def parallelism(self):
        return settings.ARGON2_PARALLELISM
