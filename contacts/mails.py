"""The transactional mails of the contacts app (double opt-in), rendered per language.

Neutral by rule: they name the workspace and the list, never anything the subscriber typed.
"""

from __future__ import annotations

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.html import escape, linebreaks
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _

from contacts.models import ConsentKind, ConsentRecord, Contact, MailingList
from core.languages import first_supported_language
from core.mail import tag_workspace
from core.models import Workspace


def contact_language(contact: Contact) -> str:
    """The language to write to this contact in: theirs, else the signup form's, else the
    workspace's; always one we have translations for."""
    candidates = [contact.locale]
    signup = (
        ConsentRecord.objects.filter(contact=contact, kind=ConsentKind.SIGNUP)
        .exclude(signup_form__isnull=True)
        .select_related("signup_form")
        .first()
    )
    if signup and signup.signup_form:
        candidates.append(signup.signup_form.locale)
    candidates.append(contact.workspace.locale)
    return first_supported_language(*candidates)


def sender_of(workspace: Workspace) -> str:
    if workspace.sender_email:
        name = workspace.sender_name or workspace.name
        return f'"{name}" <{workspace.sender_email}>'
    return settings.DEFAULT_FROM_EMAIL


def confirmation_message(
    *, contact: Contact, mailing_list: MailingList, confirm_url: str, reminder: bool
) -> EmailMultiAlternatives:
    """The double opt-in mail (or its one reminder) for `contact`, in their language."""
    workspace = contact.workspace
    language = contact_language(contact)
    with translation.override(language):
        custom = mailing_list.confirmation_templates.get(language)
        context = {
            "workspace": workspace,
            "mailing_list": mailing_list,
            "confirm_url": confirm_url,
            "reminder": reminder,
        }
        if custom:
            subject = custom["subject"]
            text = custom["body"].replace("{confirm_url}", confirm_url)
            body_html = linebreaks(escape(custom["body"])).replace(
                escape("{confirm_url}"),
                f'<a href="{escape(confirm_url)}">{escape(confirm_url)}</a>',
            )
            # Every part was escaped above; only our own link markup is added.
            context["custom_html"] = mark_safe(body_html)  # noqa: S308
        else:
            subject = _("Please confirm your subscription to %(list)s") % {
                "list": mailing_list.name
            }
            text = render_to_string("contacts/email/confirmation.txt", context)
        if reminder:
            subject = _("Reminder: %(subject)s") % {"subject": subject}
        html = render_to_string("contacts/email/confirmation.html", context)
        footer = render_to_string("contacts/email/footer.txt", context)
    message = EmailMultiAlternatives(
        subject=subject,
        body=f"{text.strip()}\n\n{footer.strip()}\n",
        from_email=sender_of(workspace),
        to=[contact.email],
        headers={"Auto-Submitted": "auto-generated"},
    )
    message.attach_alternative(html, "text/html")
    tag_workspace(message, workspace.pk)
    return message
