"""Mail transport pieces of our own: the local outbox backend and workspace tagging."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from email.policy import Compat32
from email.utils import parseaddr
from typing import Any

from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.core.mail.backends.base import BaseEmailBackend

WORKSPACE_ATTRIBUTE = "funnelwerk_workspace_id"


# Printable ASCII and tabs: no encoded words, no line breaks, no other whitespace to fold at.
_PLAIN_HEADER = re.compile(r"[\t\x20-\x7e]*")


class _QuickFold(Compat32):
    """The compat32 policy Django's mails are written with, but a header that fits on one line
    and is plain ASCII is written as it is: what compat32's folding gives for it (a property
    test holds the two together), without building an email.header.Header per header and
    part (7 µs each, a sixth of writing a marketing mail, bench/send.py)."""

    def fold_binary(self, name: str, value: Any) -> bytes:
        limit = self.max_line_length
        if (
            type(value) is str
            and not (limit and len(name) + 2 + len(value) > limit)
            and _PLAIN_HEADER.fullmatch(value)
        ):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


QUICK_FOLD = _QuickFold()


class MultipartEmail(EmailMultiAlternatives):
    """A mail with alternatives whose MIME boundary we choose: a random 128-bit one.

    The standard library's generator makes up a boundary per mail and searches every part for
    it (a regular expression compiled per mail, a scan of the whole body) so that it cannot
    occur in them; a random 128-bit boundary cannot occur by chance, so the search is left
    out (a fifth of the time it takes to write a marketing mail as bytes, bench/send.py).
    Its headers are written with QUICK_FOLD."""

    def message(self, *args: Any, **kwargs: Any) -> Any:
        mime = super().message(*args, **kwargs)
        if mime.is_multipart() and mime.get_boundary() is None:
            mime.set_boundary(f"=_fw_{uuid.uuid4().hex}")
        if type(mime.policy) is Compat32:
            mime.policy = QUICK_FOLD
        return mime


def tag_workspace(message: EmailMessage, workspace_id: object) -> EmailMessage:
    """Remember which workspace a mail belongs to, without putting it into a header."""
    setattr(message, WORKSPACE_ATTRIBUTE, str(workspace_id))
    return message


def _html_part(message: EmailMessage) -> str:
    if isinstance(message, EmailMultiAlternatives):
        for content, mimetype in message.alternatives:
            if mimetype == "text/html":
                return str(content)
    if getattr(message, "content_subtype", "plain") == "html":
        return str(message.body)
    return ""


def recipients_key(addresses: Sequence[str]) -> str:
    """The form OutboxMessage.recipients stores, so that one address matches exactly."""
    return "|" + "|".join(address.strip().lower() for address in addresses) + "|"


def _bare_addresses(addresses: Sequence[str]) -> list[str]:
    return [parseaddr(address)[1] or address for address in addresses]


class OutboxEmailBackend(BaseEmailBackend):
    """Stores every mail as an OutboxMessage row; nothing leaves the machine.

    The outbox page in the UI shows them with their parts, headers and working links.
    """

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        from core.models import OutboxMessage

        stored = 0
        for message in email_messages:
            if not message.recipients():
                continue
            mime = message.message()
            html = _html_part(message)
            text = "" if getattr(message, "content_subtype", "plain") == "html" else message.body
            headers: dict[str, Any] = {key: str(value) for key, value in mime.items()}
            addresses = [
                *_bare_addresses(message.to),
                *_bare_addresses(message.cc),
                *_bare_addresses(message.bcc),
            ]
            OutboxMessage.objects.create(
                workspace_id=getattr(message, WORKSPACE_ATTRIBUTE, None),
                from_email=message.from_email,
                to=_bare_addresses(message.to),
                cc=_bare_addresses(message.cc),
                bcc=_bare_addresses(message.bcc),
                subject=str(message.subject),
                text_body=str(text),
                html_body=html,
                headers=headers,
                recipients=recipients_key(addresses),
                raw=mime.as_string(),
            )
            stored += 1
        return stored
