"""Payload models shared by the producer's tests (unit and behaviour)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Email(BaseModel):
    """The payload of ``send-email``; it forbids extra fields, as the consumer then does too."""

    model_config = ConfigDict(extra="forbid")

    to: str


class UrgentEmail(Email):
    """A subclass with a field of its own, which ``send-email`` must not receive."""

    priority: int = 1


class Charge(BaseModel):
    """A model of another class, whose ``to`` field happens to fit ``Email``."""

    to: str
    cents: int = 100
