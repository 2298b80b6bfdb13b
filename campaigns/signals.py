"""What the campaigns app announces to the apps above it (tracking, analytics).

Sent inside the transaction that made the change; receivers schedule their work with
transaction.on_commit. Ids are strings.
"""

from __future__ import annotations

from django.dispatch import Signal

# First-time milestones were set on messages: milestone (a key of
# campaigns.milestones.MILESTONE_FIELDS), message_ids (the messages where it was newly set).
# The send path announces "sent" once per batch, after the batch's acceptances are written.
message_milestones = Signal()
