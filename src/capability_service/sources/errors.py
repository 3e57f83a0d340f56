"""Errors a source fetch can end in; the message is shown to the seller as the image's error."""

from __future__ import annotations


class SourceError(Exception):
    """The source could not be read. `rule` names the policy or failure, e.g. `private-address`."""

    def __init__(self, message: str, *, rule: str = "fetch-failed") -> None:
        super().__init__(message)
        self.rule = rule
