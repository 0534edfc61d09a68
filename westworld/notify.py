"""Notifications to people (guardians asked for their share): the message and where it goes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class GuardianNotice(BaseModel):
    """Ask (or remind) guardians to answer a request; carries no key material."""

    workflow_id: str
    request_id: str
    document_id: str
    kind: str = Field(description="'normal', 'emergency' or 'rotation'.")
    guardians: list[str] = Field(description="Guardian ids who have not answered yet.")
    deadline: datetime | None = None
    reminder: int = Field(0, ge=0, description="0 for the first notice, then 1, 2, ...")
    message: str
