"""What the contacts app announces to the apps above it (funnel, campaigns, analytics).

Each is sent inside the transaction that made the change; receivers schedule their work with
transaction.on_commit. Arguments: workspace_id and contact_id as strings (contact_unsubscribed:
contact_ids, a list).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.dispatch import Signal

if TYPE_CHECKING:
    from contacts.models import Contact

contact_created = Signal()
contact_subscribed = Signal()
# Sent when contacts must receive no further marketing mail: unsubscribed, bounced, complained
# or erased. Receivers end enrollments and cancel messages not yet handed to the ESP.
# Arguments: workspace_id and contact_ids (a list: one signal for the contacts of a batch);
# send it with unsubscribed_announce.
contact_unsubscribed = Signal()
contact_erased = Signal()


def announce(signal: Signal, contact: Contact) -> None:
    """Send one of the signals above about `contact`, with ids as strings."""
    signal.send(
        sender=type(contact), workspace_id=str(contact.workspace_id), contact_id=str(contact.pk)
    )


def unsubscribed_announce(*, workspace_id: object, contact_ids: Iterable[object]) -> None:
    """Send contact_unsubscribed for these contacts of one workspace (nothing for none)."""
    from contacts.models import Contact

    ids = [str(contact_id) for contact_id in contact_ids]
    if ids:
        contact_unsubscribed.send(sender=Contact, workspace_id=str(workspace_id), contact_ids=ids)
