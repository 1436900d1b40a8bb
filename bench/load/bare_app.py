"""The bare baseline: one Litestar GET returning a small JSON body, served by granian
with the same worker count, event loop and access-log setting as ``connecfy serve``.
What an endpoint of ours does is compared with what this one does on the same box.

    python3 -m bench.load.bare_app --port 8001 --workers 2
"""

from __future__ import annotations

import argparse

from litestar import Litestar, get


@get("/bare", sync_to_thread=False)
def bare() -> dict[str, str]:
    return {"status": "ok", "device_id": "01J0000000000000000000000"}


app = Litestar(route_handlers=[bare], openapi_config=None)


def main() -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    Granian("bench.load.bare_app:app", address="127.0.0.1", port=args.port, interface=Interfaces.ASGI,
            workers=args.workers, loop=Loops.uvloop, log_access=False).serve()


if __name__ == "__main__":
    main()
