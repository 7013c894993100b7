"""The seriatim runtime: settings, wire protocol, journal, broker, mailboxes and handlers."""

from actors.handlers import Event, HandlerRegistry, handler, load_handlers

__all__ = ["Event", "HandlerRegistry", "handler", "load_handlers"]
