"""Load scenarios for a running Connecfy: simulated phones and senders over real HTTP.

Run from the repository root::

    python3 -m bench.load steady --phones 2000 --rate 200 --seconds 60
    python3 -m bench.load capacity                 # wrk at saturation, per endpoint
    python3 -m bench.load steady --target http://10.0.0.5:8000 \\
        --operator-email ops@example.com --operator-password-file pw.txt

Without ``--target`` the bench starts its own ``connecfy serve`` (a temp data dir, its
private Redis, ``--workers`` workers) and stops it afterwards (``--redis single`` or
``--redis cluster``: a redis-server, or a Redis Cluster of ``--primaries`` primaries,
started by the bench and given to that server as ``REDIS_URL``); with ``--target`` it
drives that deployment and needs the operator's credentials (to raise the bench
accounts' limits and to pair pool phones).

The parts, one module each:

``deployment``  the server under test: started here or reached at ``--target``; its
                CPU, each Redis process's CPU, its Redis's memory, and a Redis restart.
``redis_nodes`` a Redis the bench starts for that server: one node or a Redis Cluster.
``client``      the HTTP calls and the per-request recorder every figure comes from;
``http1``       the lean HTTP/1.1 client phones and API-key senders use (httptools);
``accounts``    the operator and the bench's sender accounts (dashboard sessions);
``phones``      the phone swarm: pair, heartbeat, poll, send after a delay, report.
``senders``     the open-loop sender swarm: arrivals planned in advance, latency
                measured from the planned time.
``ledger``      every accepted message and every claim; the end-of-run invariants.
``scenarios``   steady, burst, churn, pool-fairness, redis-restart.
``baselines``   a bare Litestar endpoint (``bare_app``), the same with one no-op
                EVALSHA, and a no-op EVALSHA on the same machine, driven by wrk;
                ``capacity`` measures our endpoints the same way.
``run``         one scenario run from start to verdict, and the capacity run.
``report``      the live progress line, the table, the JSON file and the PNG plot.
"""
