"""Analytics pages. The home dashboard lives here: it may read every app below."""

from __future__ import annotations

from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from contacts.models import Contact, ContactStatus
from core.models import Membership
from core.permissions import workspace_view


@workspace_view()
def dashboard(request: HttpRequest, membership: Membership) -> HttpResponse:
    counts = dict(
        Contact.objects.for_workspace(membership.workspace)
        .values_list("status")
        .annotate(count=Count("pk"))
        .values_list("status", "count")
    )
    status_counts = [(value, label, counts.get(value, 0)) for value, label in ContactStatus.choices]
    context = {"status_counts": status_counts, "contact_count": sum(counts.values())}
    return render(request, "analytics/dashboard.html", context)
