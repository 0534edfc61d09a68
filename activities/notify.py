"""Notification activity: tell guardians a request waits for them (a webhook by default, else a local file).

With ``notify_webhook_url`` set, each notice is POSTed there as JSON (one request per notice listing the
guardians; a non-2xx answer is retried by the caller's policy). Without it, notices are appended as JSON lines to
``<data dir>/shelter/notifications.jsonl`` so a local operator (and the tests) can read them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
from temporalio import activity

from westworld.notify import GuardianNotice

log = logging.getLogger("westworld.notify")


class NotifyActivities:
    """Built with an ``httpx.AsyncClient``, the webhook URL (may be empty) and the fallback file."""

    def __init__(self, http: httpx.AsyncClient, webhook_url: str, fallback_file: Path) -> None:
        self._http = http
        self._url = webhook_url
        self._file = fallback_file

    @activity.defn(name="notify_guardians")
    async def notify_guardians(self, notice: GuardianNotice) -> int:
        """Deliver one notice; returns how many guardians it addressed."""
        if not notice.guardians:
            return 0
        body = notice.model_dump(mode="json")
        if self._url:
            response = await self._http.post(self._url, json=body)
            response.raise_for_status()
        else:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            with self._file.open("a", encoding="utf-8") as f:
                f.write(json.dumps(body, sort_keys=True) + "\n")
        log.info("notified %d guardian(s) about %s (reminder %d)", len(notice.guardians), notice.request_id,
                 notice.reminder)
        return len(notice.guardians)
