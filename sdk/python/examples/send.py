"""Send one message and a small batch with a send-only API key, then wait out a rate limit.

    pip install -e sdk/python
    CONNECFY_URL=http://127.0.0.1:8000 CONNECFY_API_KEY=<the key> python sdk/python/examples/send.py +15551234567

The key comes from the dashboard's API keys page. With a self-managed account, the
messages go to your own phones' pool (add ``device_id=`` to pick one phone); with an
API-only account, to the operator's pool.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta

from connecfy_client import Client, ConnecfyError, InvalidRequest, Outgoing, RateLimited, Retries


def main(to: str) -> int:
    base_url = os.environ.get("CONNECFY_URL", "http://127.0.0.1:8000")
    api_key = os.environ["CONNECFY_API_KEY"]
    # Up to 5 tries per send; a Retry-After of up to 2 minutes is waited out.
    with Client(api_key, base_url, retries=Retries(max_attempts=5, max_retry_after=120)) as client:
        try:
            queued = client.send(to, "Hello from Connecfy", priority="high")
            print(f"queued {queued.id} ({queued.status}), Idempotency-Key {queued.idempotency_key}")

            # Tomorrow 09:00 UTC: the same body all day, so the same key is a repeat, not a conflict.
            tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
            batch = client.send_batch(
                [
                    Outgoing(to, "Your order has shipped"),
                    Outgoing(to, "Reminder: your appointment is tomorrow", send_at=tomorrow, valid_for=3600),
                ],
                idempotency_key=f"example-batch-{tomorrow:%Y%m%d}",  # run it twice today: still two messages
            )
            for message in batch.messages:
                print(f"batch: {message.id} {message.status}{' (a repeat)' if batch.replayed else ''}")
        except InvalidRequest as exc:
            print(f"refused: {exc.detail} (field {exc.field}); items: {exc.errors}", file=sys.stderr)
            return 2
        except RateLimited as exc:
            print(f"{exc.code}: try again in {exc.retry_after} s", file=sys.stderr)
            return 3
        except ConnecfyError as exc:
            print(f"not sent after {exc.attempts} tries: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "+15551234567"))
