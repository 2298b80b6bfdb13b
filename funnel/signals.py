"""What the funnel app announces to the apps above it (campaigns, analytics).

Sent inside the transaction that made the change; receivers schedule work with on_commit.
Arguments are ids as strings.
"""

from django.dispatch import Signal

# workspace_id, event_id, contact_id, name
event_recorded = Signal()
# workspace_id, funnel_id, contact_id, from_stage_id (or None), to_stage_id, cause, transition_id
stage_changed = Signal()
# workspace_id, funnel_id, contact_id, conversion_id, event_id
contact_converted = Signal()
