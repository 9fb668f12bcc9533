"""The professional's own pages."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils import timezone

from enrolment.models import Device, Professional
from portal.psc import recent_psc_login


def professional_of(request) -> Professional | None:
    return getattr(request.user, "professional", None) if request.user.is_authenticated else None


def device_state(user) -> tuple[str, Device | None]:
    """("active", device), ("pending", device) or ("none", None)."""
    active = Device.objects.filter(user=user, confirmed=True).first()
    if active:
        return "active", active
    pending = Device.objects.filter(
        user=user, confirmed=False, pending_until__gt=timezone.now()
    ).first()
    return ("pending", pending) if pending else ("none", None)


def home(request):
    professional = professional_of(request)
    if professional is None:
        return render(request, "home/landing.html")
    state, device = device_state(request.user)
    ctx = {
        "professional": professional,
        "mailboxes": professional.mailboxes.filter(is_active=True).order_by("address"),
        "device_state": state,
        "device": device,
    }
    return render(request, "home/home.html", ctx)


@login_required
@recent_psc_login
def enrolment_start(request):
    """Step 1 of the wizard: what the professional needs, and why."""
    return render(request, "enrolment/start.html", {"professional": professional_of(request)})
