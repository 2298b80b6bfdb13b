"""Sign-up, invitations and the workspace switcher. Log-in, log-out and password reset are
Django's own views, wired in core/urls.py with our templates."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from core import services
from core.exceptions import ApplicationError
from core.forms import InvitationSignupForm, SignupForm, WorkspaceCreateForm
from core.middleware import SESSION_WORKSPACE_KEY
from core.models import User
from core.selectors import membership_for

AUTH_BACKEND = "django.contrib.auth.backends.ModelBackend"


def signup(request: HttpRequest) -> HttpResponse:
    if not settings.SIGNUP_OPEN:
        raise Http404
    if request.user.is_authenticated:
        return redirect("dashboard")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = services.user_signup(
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password"],
                name=form.cleaned_data["name"],
                workspace_name=form.cleaned_data["workspace_name"],
            )
        except ApplicationError as exc:
            form.add_error(exc.field, exc.message)
        else:
            login(request, user, backend=AUTH_BACKEND)
            messages.success(request, _("Welcome to Funnelwerk. Your workspace is ready."))
            return redirect("dashboard")
    return render(request, "core/signup.html", {"form": form})


@login_required
def workspace_create(request: HttpRequest) -> HttpResponse:
    form = WorkspaceCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        assert isinstance(request.user, User)
        try:
            workspace = services.workspace_create(
                name=form.cleaned_data["name"], owner=request.user
            )
        except ApplicationError as exc:
            form.add_error(exc.field, exc.message)
        else:
            request.session[SESSION_WORKSPACE_KEY] = str(workspace.pk)
            messages.success(request, _("Workspace %(name)s created.") % {"name": workspace.name})
            return redirect("dashboard")
    return render(request, "core/workspace_create.html", {"form": form})


@login_required
@require_POST
def workspace_switch(request: HttpRequest) -> HttpResponse:
    assert isinstance(request.user, User)
    membership = membership_for(user=request.user, workspace_id=request.POST.get("workspace"))
    if membership is None:
        raise Http404
    request.session[SESSION_WORKSPACE_KEY] = str(membership.workspace_id)
    next_url = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = ""
    return redirect(next_url or "dashboard")


def invitation_accept(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows the invitation; POST accepts it (as the logged-in user, or by signing up)."""
    invitation = services.invitation_from_token(token)
    if invitation is None:
        return render(request, "core/invitation_invalid.html", status=404)
    existing_user = User.objects.filter(email__iexact=invitation.email).first()
    form = InvitationSignupForm(request.POST or None) if existing_user is None else None
    context = {"invitation": invitation, "form": form, "existing_user": existing_user}
    if request.method != "POST":
        return render(request, "core/invitation.html", context)

    if request.user.is_authenticated:
        assert isinstance(request.user, User)
        user = request.user
    elif existing_user is not None:
        return redirect_to_login(request.path)
    else:
        assert form is not None
        if not form.is_valid():
            return render(request, "core/invitation.html", context, status=400)
        user = services.user_get_or_create(
            email=invitation.email,
            password=form.cleaned_data["password"],
            name=form.cleaned_data["name"],
        )
        login(request, user, backend=AUTH_BACKEND)
    try:
        membership = services.invitation_accept(invitation=invitation, user=user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return render(request, "core/invitation.html", context, status=400)
    request.session[SESSION_WORKSPACE_KEY] = str(membership.workspace_id)
    messages.success(
        request, _("You joined %(workspace)s.") % {"workspace": membership.workspace.name}
    )
    return redirect("dashboard")
