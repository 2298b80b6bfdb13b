"""Workspace pages: settings, members and invitations, API keys, outbox."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST

from core import selectors, services
from core.exceptions import ApplicationError
from core.forms import ApiKeyForm, InvitationForm, MembershipRoleForm, WorkspaceSettingsForm
from core.models import Invitation, Membership, Role, User
from core.permissions import workspace_view


@workspace_view(read=Role.ADMIN, write=Role.ADMIN)
def workspace_settings(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = WorkspaceSettingsForm(request.POST or None, instance=membership.workspace)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, _("Settings saved."))
        return redirect("workspace-settings")
    return render(request, "core/workspace_settings.html", {"form": form})


@require_POST
@workspace_view(read=Role.ADMIN, write=Role.ADMIN)
def workspace_sending_resume(request: HttpRequest, membership: Membership) -> HttpResponse:
    services.workspace_sending_resume(actor=membership)
    messages.success(request, _("Sending resumed."))
    return redirect("workspace-settings")


@workspace_view(write=Role.ADMIN)
def members(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = InvitationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            invitation = services.invitation_create(
                actor=membership, email=form.cleaned_data["email"], role=form.cleaned_data["role"]
            )
        except ApplicationError as exc:
            form.add_error(exc.field, exc.message)
        else:
            messages.success(
                request, _("Invitation sent to %(email)s.") % {"email": invitation.email}
            )
            return redirect("members")
    context = {
        "form": form,
        "members": selectors.workspace_members(workspace=membership.workspace),
        "invitations": selectors.workspace_open_invitations(workspace=membership.workspace),
        "role_choices": Role.choices,
    }
    return render(request, "core/members.html", context)


@require_POST
@workspace_view(write=Role.ADMIN)
def member_change_role(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    member = get_object_or_404(Membership, pk=pk, workspace=membership.workspace)
    form = MembershipRoleForm(request.POST)
    if form.is_valid():
        try:
            services.membership_change_role(
                actor=membership, membership=member, role=form.cleaned_data["role"]
            )
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, _("Role changed."))
    return redirect("members")


@require_POST
@workspace_view(write=Role.VIEWER)
def member_remove(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    """Admins remove members; anyone may remove themselves (leave the workspace)."""
    member = get_object_or_404(Membership, pk=pk, workspace=membership.workspace)
    leaving = member.pk == membership.pk
    try:
        services.membership_remove(actor=membership, membership=member)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("members")
    if leaving:
        messages.success(request, _("You left %(name)s.") % {"name": membership.workspace.name})
        return redirect("dashboard")
    messages.success(request, _("Member removed."))
    return redirect("members")


@require_POST
@workspace_view(write=Role.ADMIN)
def invitation_revoke(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    invitation = get_object_or_404(Invitation, pk=pk, workspace=membership.workspace)
    services.invitation_revoke(actor=membership, invitation=invitation)
    messages.success(request, _("Invitation revoked."))
    return redirect("members")


@workspace_view(read=Role.ADMIN, write=Role.ADMIN)
def api_keys(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = ApiKeyForm(request.POST or None)
    new_key = None
    if request.method == "POST" and form.is_valid():
        assert isinstance(request.user, User)
        try:
            _api_key, new_key = services.api_key_create(
                workspace=membership.workspace,
                name=form.cleaned_data["name"],
                access=form.cleaned_data["access"],
                created_by=request.user,
            )
        except ApplicationError as exc:
            form.add_error(exc.field, exc.message)
        else:
            form = ApiKeyForm()
    context = {
        "form": form,
        "new_key": new_key,
        "api_keys": selectors.workspace_api_keys(workspace=membership.workspace),
    }
    response = render(request, "core/api_keys.html", context)
    if new_key:
        response["Cache-Control"] = "no-store"
    return response


@require_POST
@workspace_view(write=Role.ADMIN)
def api_key_revoke(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    api_key = get_object_or_404(selectors.workspace_api_keys(workspace=membership.workspace), pk=pk)
    services.api_key_revoke(api_key=api_key)
    messages.success(request, _("API key %(name)s revoked.") % {"name": api_key.name})
    return redirect("api-keys")


@workspace_view()
def outbox(request: HttpRequest, membership: Membership) -> HttpResponse:
    assert isinstance(request.user, User)
    mails = selectors.outbox_for_user(user=request.user)
    page = Paginator(mails, 50).get_page(request.GET.get("page"))
    return render(request, "core/outbox.html", {"page": page})


@workspace_view()
def outbox_message(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    assert isinstance(request.user, User)
    mail = get_object_or_404(selectors.outbox_for_user(user=request.user), pk=pk)
    return render(request, "core/outbox_message.html", {"mail": mail})


@xframe_options_sameorigin
@workspace_view()
def outbox_message_html(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    """The HTML part alone, for the preview frame. The sandbox CSP keeps its scripts from
    running and its forms from posting, while its links open in a new tab."""
    assert isinstance(request.user, User)
    mail = get_object_or_404(selectors.outbox_for_user(user=request.user), pk=pk)
    response = HttpResponse(
        _with_base_target(mail.html_body), content_type="text/html; charset=utf-8"
    )
    response["Content-Security-Policy"] = (
        "sandbox allow-popups allow-popups-to-escape-sandbox; default-src 'none'; "
        "img-src * data:; style-src 'unsafe-inline'; font-src *"
    )
    return response


def _with_base_target(html: str) -> str:
    # Links in the preview frame open in a new tab, where our own pages (which refuse to be
    # framed) load normally.
    base = '<base target="_blank">'
    head = html.lower().find("<head>")
    if head >= 0:
        return html[: head + 6] + base + html[head + 6 :]
    return base + html
