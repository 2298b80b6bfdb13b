"""Sequences, enrollments, broadcasts and messages arrive with issue 5 (see docs/roadmap.md)."""
