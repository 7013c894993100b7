"""Supervision: the supervisor actor, placement and the outbox relay."""
