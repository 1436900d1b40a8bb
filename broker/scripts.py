"""The script registry: every ``lua/<name>-<key count>.lua``, loaded once, called by SHA.

A script's file name carries its key count; :meth:`ScriptRegistry.call` refuses a call
with any other number of keys. ``--- @include "includes/x"`` lines are replaced by the
fragment's text (once per script). All scripts are loaded at start-up so that a broken
one fails fast; a ``NOSCRIPT`` reply (Redis restarted or flushed, a promoted replica)
reloads and retries.

:meth:`ScriptRegistry.call_waited` follows the call with ``WAIT`` on the same connection
(:func:`broker.redis_client.replicated`), with a write of the slot's
:func:`~broker.keys.replication_mark` in between: ``WAIT`` counts the writes of its
connection up to its last one, and a call that writes nothing itself (a repeated send
answered with the first one's ids, a repeated status report) answers with what an
earlier call wrote, perhaps on another connection; the mark, written after it, makes the
``WAIT`` cover everything the primary holds in that slot.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from broker import keys as key_names
from broker.errors import BrokerError, from_script_reply
from broker.redis_client import RedisClient, replicated

_NAME = re.compile(r"^(?P<name>[a-z][a-z-]*)-(?P<keys>\d+)\.lua$")
_INCLUDE = re.compile(r'^--- @include "(?P<path>[a-z/_-]+)"\s*$', re.MULTILINE)
MARK_TTL_MS = 60_000  # a replication mark outlives any WAIT that follows it


def lua_directory() -> Path:
    """Where the scripts are: inside the installed package, or the source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "lua", here.parent / "lua"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no lua/ directory beside the broker package")


class Script:
    __slots__ = ("key_count", "name", "sha", "source")

    def __init__(self, name: str, key_count: int, source: str) -> None:
        self.name = name
        self.key_count = key_count
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


def _expand(text: str, directory: Path, seen: set[str]) -> str:
    def include(match: re.Match[str]) -> str:
        path = match.group("path")
        if path in seen:
            return ""
        seen.add(path)
        return _expand((directory / f"{path}.lua").read_text(), directory, seen)

    return _INCLUDE.sub(include, text)


class ScriptRegistry:
    def __init__(self, directory: Path | None = None) -> None:
        directory = directory or lua_directory()
        self.scripts: dict[str, Script] = {}
        for path in sorted(directory.glob("*.lua")):
            match = _NAME.match(path.name)
            if not match:
                raise ValueError(f"script file name must be <name>-<key count>.lua: {path.name}")
            source = _expand(path.read_text(), directory, set())
            self.scripts[match["name"]] = Script(match["name"], int(match["keys"]), source)

    async def load(self, redis: RedisClient) -> None:
        """Load every script; a script Redis rejects raises here, at start-up."""
        for script in self.scripts.values():
            sha = await redis.script_load(script.source)
            if sha != script.sha:
                raise RuntimeError(f"Redis hashed {script.name} as {sha}, expected {script.sha}")

    async def call(self, redis: RedisClient, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        script = self.scripts[name]
        if len(keys) != script.key_count:
            raise ValueError(f"{name} takes {script.key_count} keys, got {len(keys)}")
        try:
            try:
                return await redis.evalsha(script.sha, script.key_count, *keys, *args)
            except NoScriptError:
                await redis.script_load(script.source)
                return await redis.evalsha(script.sha, script.key_count, *keys, *args)
        except NoScriptError:
            raise
        except ResponseError as exc:
            error: BrokerError | None = from_script_reply(str(exc))
            if error is None:
                raise
            raise error from None

    async def call_waited(
        self, redis: RedisClient, name: str, keys: Sequence[str], args: Sequence[Any], replicas: int, limit: float
    ) -> Any:
        """:meth:`call`, answered only once ``replicas`` replicas hold what the script
        wrote (within the client's time limit, or ``limit`` seconds when it has none), else
        :class:`~broker.redis_client.StoreNotReplicated`."""
        script = self.scripts[name]
        if len(keys) != script.key_count:
            raise ValueError(f"{name} takes {script.key_count} keys, got {len(keys)}")
        commands = [
            ("EVALSHA", script.sha, script.key_count, *keys, *args),
            ("SET", key_names.replication_mark(keys[0]), "1", "PX", MARK_TTL_MS),
        ]
        try:
            try:
                return (await replicated(redis, keys[0], commands, replicas, limit))[0]
            except NoScriptError:
                await redis.script_load(script.source)
                return (await replicated(redis, keys[0], commands, replicas, limit))[0]
        except NoScriptError:
            raise
        except ResponseError as exc:
            error: BrokerError | None = from_script_reply(str(exc))
            if error is None:
                raise
            raise error from None
