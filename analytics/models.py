"""Rollups and report queries arrive with issue 7 (see docs/roadmap.md)."""
