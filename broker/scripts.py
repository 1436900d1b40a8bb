"""The script registry: every ``lua/<name>-<key count>.lua``, loaded once, called by SHA.

A script's file name carries its key count; :meth:`ScriptRegistry.call` refuses a call
with any other number of keys. ``--- @include "includes/x"`` lines are replaced by the
fragment's text (once per script). All scripts are loaded at start-up so that a broken
one fails fast; a ``NOSCRIPT`` reply (Redis restarted or flushed) reloads and retries.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from broker.errors import BrokerError, from_script_reply
from broker.redis_client import RedisClient

_NAME = re.compile(r"^(?P<name>[a-z][a-z-]*)-(?P<keys>\d+)\.lua$")
_INCLUDE = re.compile(r'^--- @include "(?P<path>[a-z/_-]+)"\s*$', re.MULTILINE)


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
