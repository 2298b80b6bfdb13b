"""Receivers of the funnel app: listen to contacts' signals (the outgoing webhooks hook in here)."""
