"""What the contacts app announces to the apps above it (funnel, campaigns, analytics).

Each is sent inside the transaction that made the change; receivers schedule their work with
transaction.on_commit. Arguments: workspace_id and contact_id as strings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.dispatch import Signal

if TYPE_CHECKING:
    from contacts.models import Contact

contact_created = Signal()
contact_subscribed = Signal()
# Sent when a contact must receive no further marketing mail: unsubscribed, bounced, complained
# or erased. Receivers end enrollments and cancel messages not yet handed to the ESP.
contact_unsubscribed = Signal()
contact_erased = Signal()


def announce(signal: Signal, contact: Contact) -> None:
    """Send one of the signals above about `contact`, with ids as strings."""
    signal.send(
        sender=type(contact), workspace_id=str(contact.workspace_id), contact_id=str(contact.pk)
    )
