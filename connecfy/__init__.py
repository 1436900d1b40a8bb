"""The Connecfy program: the ``connecfy`` command, ``serve`` (granian, the private Redis,
the background process and their supervisors), and logging set-up.

Layers point one way: ``connecfy`` → ``api`` (HTTP) → ``broker`` (Redis) → ``lua/``.
"""
