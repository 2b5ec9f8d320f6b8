"""The examples run as their READMEs say (on the memory backend here)."""

from __future__ import annotations

import json
import random

import pytest

from examples.quickstart import app


def test_the_quickstart_app_sends_welcome_emails_and_dead_letters_a_bad_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(random, "random", lambda: 0.99)  # the webhook endpoint is up
    with app.jobs.testing() as queue:
        app.welcome_email.enqueue(app.WelcomeEmail(user_id=1, address="ada@example.com"))
        app.welcome_email.enqueue(app.WelcomeEmail(user_id=2, address="not-an-address"))
        app.deliver_webhook.enqueue(app.Webhook(url="https://hooks.example.com/1", event="signup"))
        report = app.jobs.drain()
        dead = queue.dead_letter_queue.messages() if queue.dead_letter_queue else []
    assert report.completed == 2
    assert [json.loads(m.attributes["cloudjobs.dead_letter"])["reason"] for m in dead] == ["permanent_error"]


def test_a_failing_webhook_is_retried_until_it_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([0.1, 0.1, 0.99])  # two 503s, then success
    monkeypatch.setattr(random, "random", lambda: next(answers))
    with app.jobs.testing():
        app.deliver_webhook.enqueue(app.Webhook(url="https://hooks.example.com/1", event="signup"))
        report = app.jobs.drain()
    assert (report.retried, report.completed, report.dead_lettered) == (2, 1, 0)
