"""Load scenarios for a running Connecfy: simulated phones and senders over real HTTP.

Run from the repository root::

    python3 -m bench.load steady --phones 2000 --rate 200 --seconds 60
    python3 -m bench.load steady --long-poll --phones 5000 --rate 500 --seconds 60
    python3 -m bench.load poll-vs-long-poll --phones 2000 --rate 100 --seconds 60
    python3 -m bench.load largest-fleet --long-poll --rate 500 --fleets 2000 5000 10000 20000
    python3 -m bench.load capacity                 # wrk at saturation, per endpoint
    python3 -m bench.load steady --target http://10.0.0.5:8000 \\
        --operator-email ops@example.com --operator-password-file pw.txt

Without ``--target`` the bench starts its own ``connecfy serve`` (a temp data dir, its
private Redis, ``--workers`` workers) and stops it afterwards (``--redis single`` or
``--redis cluster``: a redis-server, or a Redis Cluster of ``--primaries`` primaries,
started by the bench and given to that server as ``REDIS_URL``); with ``--target`` it
drives that deployment and needs the operator's credentials (to raise the bench
accounts' limits and to pair pool phones).

The phones poll every 20 s (and heartbeat every 15 s), or with ``--long-poll`` hold
``GET .../tasks/?wait=30`` open and ask again at once after each answer (a heartbeat
every 5 min). Each phone holds connections of its own, from a source address of its own
in 127.0.0.0/8. The phones run in generator processes (``--generator-processes``, by
default as many as keep each within 8,000 phones and the open-files limit); the parent
pairs them, runs the senders, and folds the generators' records in as they come.

The parts, one module each:

``deployment``  the server under test: started here or reached at ``--target``; its
                CPU, each Redis process's CPU, its Redis's memory, and a Redis restart.
``redis_nodes`` a Redis the bench starts for that server: one node or a Redis Cluster.
``client``      the HTTP calls and the per-request recorder every figure comes from;
``http1``       the lean HTTP/1.1 client phones and API-key senders use (httptools),
                from a source address of its own per phone;
``accounts``    the operator and the bench's sender accounts (dashboard sessions);
``phones``      the phones of one process: pair, heartbeat, poll or long-poll, send after
                a delay, report.
``fleet``       the run's phones: paired in the parent, each given its own source
                address, split among generator processes, their records merged.
``generator``   one generator process: its share of the phones on its own event loop,
                talking to the parent in frames on its stdin and stdout.
``loop_lag``    how late an event loop runs (each generator's, and the senders').
``senders``     the open-loop sender swarm: arrivals planned in advance, latency
                measured from the planned time.
``ledger``      every accepted message and every claim; the end-of-run invariants.
``scenarios``   steady, burst, churn, pool-fairness, redis-restart.
``comparisons`` runs made of several steady runs: poll-vs-long-poll, largest-fleet.
``server_metrics`` the server's /metrics histograms, read at both ends of the window.
``window``      the measured window: client and server latencies side by side,
                requests per phone per minute, 202 → claimed by queue, the generators,
                the server's RSS and Redis's memory at both ends.
``baselines``   a bare Litestar endpoint (``bare_app``), the same with one no-op
                EVALSHA, and a no-op EVALSHA on the same machine, driven by wrk;
                ``capacity`` measures our endpoints the same way.
``run``         one scenario run from start to verdict, and the capacity run.
``report``      the live progress line, the table, the JSON file and the PNG plot.
"""
