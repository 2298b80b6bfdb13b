"""Pages for signup forms: the builder, the hosted URL and the embeddable snippet."""

from __future__ import annotations

from django.contrib import messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import URLPattern, URLResolver, path
from django.utils.translation import gettext as _

from contacts import signup_forms
from contacts.forms import SignupFormForm
from contacts.models import SignupForm
from core.exceptions import ApplicationError
from core.models import Membership
from core.permissions import workspace_view


def _forms(membership: Membership) -> QuerySet[SignupForm]:
    return SignupForm.objects.filter(workspace=membership.workspace).select_related(
        "mailing_list", "consent_text", "workspace"
    )


@workspace_view()
def form_index(request: HttpRequest, membership: Membership) -> HttpResponse:
    return render(request, "contacts/forms/form_index.html", {"signup_forms": _forms(membership)})


@workspace_view()
def form_detail(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    signup_form = get_object_or_404(_forms(membership), pk=pk)
    context = {
        "signup_form": signup_form,
        "hosted_url": signup_forms.hosted_url(signup_form),
        "embed_html": signup_forms.embed_html(signup_form),
    }
    return render(request, "contacts/forms/form_detail.html", context)


def _save(
    request: HttpRequest, membership: Membership, signup_form: SignupForm | None
) -> HttpResponse:
    workspace = membership.workspace
    initial = (
        SignupFormForm.initial_for(signup_form)
        if signup_form
        else {
            "locale": workspace.locale,
            "privacy_policy_url": workspace.privacy_policy_url,
            "ask_first_name": True,
            "consent_text": _(
                "Yes, I want to receive the newsletter by email. I can unsubscribe at any time."
            ),
        }
    )
    form = SignupFormForm(request.POST or None, initial=initial, workspace=workspace)
    if request.method == "POST" and form.is_valid():
        try:
            if signup_form is None:
                signup_form = signup_forms.signup_form_create(
                    workspace=workspace, **form.service_arguments()
                )
            else:
                signup_forms.signup_form_update(signup_form=signup_form, **form.service_arguments())
        except ApplicationError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, _("Form %(name)s saved.") % {"name": signup_form.name})
            return redirect("form-detail", pk=signup_form.pk)
    return render(
        request, "contacts/forms/form_form.html", {"form": form, "signup_form": signup_form}
    )


@workspace_view(read="editor")
def form_create(request: HttpRequest, membership: Membership) -> HttpResponse:
    if not membership.workspace.lists.exists():
        messages.info(request, _("Create a list first: every form feeds a list."))
        return redirect("list-create")
    return _save(request, membership, None)


@workspace_view(read="editor")
def form_edit(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    return _save(request, membership, get_object_or_404(_forms(membership), pk=pk))


@workspace_view(read="editor")
def form_delete(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    signup_form = get_object_or_404(_forms(membership), pk=pk)
    if request.method == "POST":
        signup_form.delete()
        messages.success(request, _("Form deleted."))
        return redirect("form-index")
    return render(request, "contacts/forms/form_confirm_delete.html", {"signup_form": signup_form})


urlpatterns: list[URLPattern | URLResolver] = [
    path("", form_index, name="form-index"),
    path("new/", form_create, name="form-create"),
    path("<uuid:pk>/", form_detail, name="form-detail"),
    path("<uuid:pk>/edit/", form_edit, name="form-edit"),
    path("<uuid:pk>/delete/", form_delete, name="form-delete"),
]
