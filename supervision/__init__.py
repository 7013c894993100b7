"""Supervision: the supervisor actor, placement, the outbox relay and the process tree."""
