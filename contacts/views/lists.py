"""Pages for lists: index with subscriber counts, create, edit (incl. the confirmation mail)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import URLPattern, URLResolver, path
from django.utils.translation import gettext as _

from contacts import subscriptions
from contacts.forms import MailingListForm
from contacts.models import MailingList
from core.exceptions import ApplicationError
from core.models import Membership
from core.permissions import workspace_view


@workspace_view()
def list_index(request: HttpRequest, membership: Membership) -> HttpResponse:
    mailing_lists = subscriptions.mailing_lists_with_counts(workspace=membership.workspace)
    return render(request, "contacts/lists/list_index.html", {"mailing_lists": mailing_lists})


def _save(
    request: HttpRequest, membership: Membership, mailing_list: MailingList | None
) -> HttpResponse:
    initial = MailingListForm.initial_for(mailing_list) if mailing_list else None
    form = MailingListForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            if mailing_list is None:
                mailing_list = subscriptions.mailing_list_create(
                    workspace=membership.workspace, **form.service_arguments()
                )
            else:
                subscriptions.mailing_list_update(
                    mailing_list=mailing_list, **form.service_arguments()
                )
        except ApplicationError as exc:
            field = exc.field if exc.field in form.fields else None
            form.add_error(field, exc.message)
        else:
            messages.success(request, _("List %(name)s saved.") % {"name": mailing_list.name})
            return redirect("list-index")
    return render(
        request, "contacts/lists/list_form.html", {"form": form, "mailing_list": mailing_list}
    )


@workspace_view(read="editor")
def list_create(request: HttpRequest, membership: Membership) -> HttpResponse:
    return _save(request, membership, None)


@workspace_view(read="editor")
def list_edit(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    mailing_list = get_object_or_404(MailingList, pk=pk, workspace=membership.workspace)
    return _save(request, membership, mailing_list)


@workspace_view(read="editor")
def list_delete(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    mailing_list = get_object_or_404(MailingList, pk=pk, workspace=membership.workspace)
    if request.method == "POST":
        try:
            subscriptions.mailing_list_delete(mailing_list=mailing_list)
        except ApplicationError as exc:
            messages.error(request, exc.message)
            return redirect("list-edit", pk=mailing_list.pk)
        messages.success(request, _("List deleted."))
        return redirect("list-index")
    return render(
        request, "contacts/lists/list_confirm_delete.html", {"mailing_list": mailing_list}
    )


urlpatterns: list[URLPattern | URLResolver] = [
    path("", list_index, name="list-index"),
    path("new/", list_create, name="list-create"),
    path("<uuid:pk>/", list_edit, name="list-edit"),
    path("<uuid:pk>/delete/", list_delete, name="list-delete"),
]
