"""Funnels, stages, events and stage rules arrive with issue 4 (see docs/roadmap.md)."""
