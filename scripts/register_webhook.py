"""Register (or update) the MLflow webhook that wakes Airflow on registry events.

    MLOPS_WEBHOOK_SECRET=... python scripts/register_webhook.py \\
        --mlflow-url http://127.0.0.1:5000 --airflow-url http://127.0.0.1:8080 [--test]

Idempotent: a webhook with the same ``--name`` is updated in place (URL, events, secret,
status ACTIVE), never duplicated. The secret is read from the environment variable named by
``--secret-env`` (never from argv, where ``ps`` and shell history would show it); the Airflow API
server must know the same secret (``MLOPS_WEBHOOK_SECRET`` or connection ``mlflow_webhook``).

The MLflow server must allow the URL: for http:// or private addresses it needs
``MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https`` and ``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true``, and
``MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY`` so stored secrets survive its restarts.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, cast

from mlops_provider.webhooks.events import ALIAS_CREATED, VERSION_CREATED
from mlops_provider.webhooks.mount import webhook_url

DEFAULT_NAME = "airflow-mlops-registry"
DEFAULT_EVENTS = (ALIAS_CREATED, VERSION_CREATED)
EXIT_CONFIG = 2


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlflow-url", required=True, help="MLflow tracking server URL")
    parser.add_argument("--airflow-url", required=True, help="Airflow API server base URL")
    parser.add_argument(
        "--secret-env",
        default="MLOPS_WEBHOOK_SECRET",
        help="name of the environment variable holding the shared HMAC secret",
    )
    parser.add_argument("--name", default=DEFAULT_NAME, help="webhook name (the idempotency key)")
    parser.add_argument(
        "--events",
        nargs="+",
        default=list(DEFAULT_EVENTS),
        help=f"MLflow events (default: {' '.join(DEFAULT_EVENTS)})",
    )
    parser.add_argument("--description", default="Wakes Airflow's mlops DAGs via asset events")
    parser.add_argument(
        "--test", action="store_true", help="send MLflow's test delivery and report the answer"
    )
    return parser.parse_args(argv)


def _find_by_name(client: Any, name: str) -> list[Any]:
    found: list[Any] = []
    token: str | None = None
    while True:
        page = client.list_webhooks(max_results=100, page_token=token)
        found.extend(w for w in page if w.name == name)
        token = page.token
        if not token:
            return found


def register(
    *,
    mlflow_url: str,
    airflow_url: str,
    secret: str,
    name: str = DEFAULT_NAME,
    events: list[str] | tuple[str, ...] = DEFAULT_EVENTS,
    description: str = "",
) -> tuple[Any, bool]:
    """Create or update the webhook; returns ``(webhook, created)``."""
    from mlflow import MlflowClient
    from mlflow.entities.webhook import WebhookEvent

    client = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
    url = webhook_url(airflow_url)
    # unknown names fail here, before anything is sent (from_str types its argument as a Literal)
    wanted = [WebhookEvent.from_str(cast(Any, event)) for event in events]
    existing = _find_by_name(client, name)
    if existing:
        for extra in existing[1:]:  # left over from an older, non-idempotent registration
            client.delete_webhook(extra.webhook_id)
        webhook = client.update_webhook(
            existing[0].webhook_id,
            url=url,
            events=list(wanted),
            description=description,
            secret=secret,
            status="ACTIVE",
        )
        return webhook, False
    webhook = client.create_webhook(
        name=name,
        url=url,
        events=list(wanted),
        description=description,
        secret=secret,
        status="ACTIVE",
    )
    return webhook, True


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    secret = os.environ.get(args.secret_env, "").strip()
    if not secret:
        print(
            f"error: environment variable {args.secret_env} is empty or unset; export the shared "
            f"webhook secret there (e.g. `export {args.secret_env}=$(openssl rand -hex 32)`) and "
            f"give the Airflow API server the same value",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if len(secret) < 16:
        print(f"error: {args.secret_env} is shorter than 16 characters", file=sys.stderr)
        return EXIT_CONFIG
    try:
        webhook, created = register(
            mlflow_url=args.mlflow_url,
            airflow_url=args.airflow_url,
            secret=secret,
            name=args.name,
            events=args.events,
            description=args.description,
        )
    except Exception as err:  # MlflowException, connection errors: say what and where
        print(
            f"error: registering webhook {args.name!r} at {args.mlflow_url}: {err}", file=sys.stderr
        )
        return 1
    events = ", ".join(str(e) for e in webhook.events)
    print(
        f"{'created' if created else 'updated'} webhook {webhook.name!r} ({webhook.webhook_id}): "
        f"{webhook.url} on [{events}]"
    )
    if args.test:
        from mlflow import MlflowClient

        result = MlflowClient(tracking_uri=args.mlflow_url).test_webhook(webhook.webhook_id)
        print(
            f"test delivery: success={result.success} status={result.response_status} "
            f"body={result.response_body or result.error_message}"
        )
        return 0 if result.success else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
