"""permessage-deflate (RFC 7692)."""

from __future__ import annotations


def server_negotiate(offers: list[str]):
    return None


def client_offer() -> str | None:
    return None
