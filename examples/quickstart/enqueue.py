"""Enqueue a few jobs for the quickstart app: ``python -m examples.quickstart.enqueue``."""

from __future__ import annotations

from examples.quickstart.app import Webhook, WelcomeEmail, deliver_webhook, jobs, welcome_email


def main() -> None:
    """Enqueue one of each, plus a batch of webhooks, and print the job ids."""
    print(welcome_email.enqueue(WelcomeEmail(user_id=1, address="ada@example.com")))
    print(welcome_email.enqueue(WelcomeEmail(user_id=2, address="not-an-address")))
    ids = deliver_webhook.enqueue_many(
        [Webhook(url=f"https://hooks.example.com/{n}", event="signup") for n in range(5)]
    )
    print("\n".join(ids))
    print(jobs.enqueue("welcome-email", {"user_id": 3, "address": "grace@example.com"}, delay=10))


if __name__ == "__main__":
    main()
