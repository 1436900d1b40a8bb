"""Every module here runs its ``connecfy serve`` on its private Redis and again on a Redis
Cluster (:mod:`tests.support.serve_redis`)."""

from tests.support.serve_redis import serve_redis

__all__ = ["serve_redis"]
