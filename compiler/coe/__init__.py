"""Composition of Experts: a two-step router, expert configs and tier-aware serving (DESIGN.md §10)."""
