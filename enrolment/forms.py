from django import forms
from django.conf import settings
from django.contrib.auth import password_validation
from django.utils.translation import gettext_lazy as _

from enrolment.verifier import MAX_SECRET_LENGTH


class ErrorsDescribed:
    """A field's error is read out with the field: its input names the error's element,
    NAME-error in the templates (aria-describedby), and says it is invalid."""

    def add_error(self, field, error):
        super().add_error(field, error)
        names = [field] if field else []
        for name in names:
            if name in self.fields:
                attrs = self.fields[name].widget.attrs
                described = attrs.get("aria-describedby", "").split()
                if f"{name}-error" not in described:
                    attrs["aria-describedby"] = " ".join([*described, f"{name}-error"])
                attrs["aria-invalid"] = "true"


class OneTimeCodeInput(forms.TextInput):
    """A text input that never writes back what was typed: a page refusing a code (wrong, or
    right but throttled and still valid for a while) must not hold it."""

    def format_value(self, value):
        return None


class CodeForm(ErrorsDescribed, forms.Form):
    code = forms.CharField(
        label=_("6-digit code shown by FreeOTP"),
        max_length=12,
        widget=OneTimeCodeInput(
            attrs={
                "inputmode": "numeric",
                "autocomplete": "one-time-code",
                "autofocus": True,
                "pattern": "[0-9 ]*",
                "aria-describedby": "code-help",
            }
        ),
    )

    def clean_code(self):
        # People type "123 456" as the app groups it.
        code = self.cleaned_data["code"].replace(" ", "")
        if len(code) != 6 or not code.isascii() or not code.isdigit():
            raise forms.ValidationError(_("Type the 6 digits that FreeOTP shows."))
        return code


class EnrolmentTokenForm(forms.Form):
    # The template writes the input (templates/staff/enrol_token.html).
    token = forms.CharField(label=_("Enrolment token"), max_length=64)


class MailPasswordForm(ErrorsDescribed, forms.Form):
    password1 = forms.CharField(
        label=_("New mail password"),
        strip=False,
        widget=forms.PasswordInput(
            attrs={"autocomplete": "new-password", "aria-describedby": "password-help"}
        ),
    )
    password2 = forms.CharField(
        label=_("The same password again"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def clean(self):
        cleaned = super().clean()
        first, second = cleaned.get("password1"), cleaned.get("password2")
        longest = longest_mail_password()
        if first and len(first) > longest:
            # The verifier takes at most MAX_SECRET_LENGTH characters, the code included.
            self.add_error(
                "password1",
                _("At most %(longest)d characters: it is sent with the code in one field.")
                % {"longest": longest},
            )
        elif first and len(first.encode()) > longest_backend_password():
            # nginx reads the verifier's reply, which then carries it, into 1 KiB.
            self.add_error(
                "password1",
                _(
                    "Too long for the mail servers: at most %(longest)d letters without "
                    "accents, digits or signs; a letter with an accent or a symbol counts as "
                    "two to four."
                )
                % {"longest": longest_backend_password()},
            )
        elif first and second and first != second:
            self.add_error("password2", _("The two passwords differ."))
        elif first:
            try:
                password_validation.validate_password(first, self.user)
            except forms.ValidationError as error:
                self.add_error("password1", error)
        return cleaned


def longest_mail_password() -> int:
    return MAX_SECRET_LENGTH - 6 - len(settings.VERIFY_CODE_SEPARATOR)


# In MAIL_BACKEND_PASS_MODE=password, the verifier's auth_http reply to nginx carries the
# password (Auth-Pass) with the mailbox (up to 254 characters), and nginx reads the reply
# into 1 KiB: a longer password would fail every login, after its code was spent.
BACKEND_PASSWORD_MAX_BYTES = 256


def longest_backend_password() -> int:
    """In UTF-8 bytes: no limit beyond the verifier's when nginx does not pass it on."""
    if settings.MAIL_BACKEND_PASS_MODE == "password":  # noqa: S105 (a mode's name)
        return BACKEND_PASSWORD_MAX_BYTES
    return 4 * MAX_SECRET_LENGTH
