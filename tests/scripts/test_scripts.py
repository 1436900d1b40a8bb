"""The script registry: contracts, key counts, includes, NOSCRIPT, broken scripts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from redis.exceptions import ResponseError

from broker.scripts import ScriptRegistry, lua_directory

LUA = lua_directory()


def test_every_script_has_a_contract_naming_each_key_and_argument() -> None:
    registry = ScriptRegistry()
    assert set(registry.scripts) >= {
        "enqueue",
        "claim",
        "report-status",
        "cancel",
        "heartbeat",
        "sweep",
        "rate-limit",
        "register-device",
    }
    for path in LUA.glob("*.lua"):
        text = path.read_text()
        header = text.split("]]", 1)[0]
        count = int(re.search(r"-(\d+)\.lua$", path.name).group(1))
        for i in range(1, count + 1):
            assert f"KEYS[{i}]" in header, f"{path.name} does not document KEYS[{i}]"
        assert f"KEYS[{count + 1}]" not in text, f"{path.name} uses more keys than its name says"
        used_argv = {int(n) for n in re.findall(r"ARGV\[(\d+)\]", text.split("]]", 1)[1])}
        for n in used_argv:
            assert f"ARGV[{n}]" in header, f"{path.name} does not document ARGV[{n}]"
        assert "Output:" in header
        assert "TIME" not in text.split("]]", 1)[1], f"{path.name} reads the clock"


def test_includes_are_expanded_once() -> None:
    claim = ScriptRegistry().scripts["claim"]
    assert "@include" not in claim.source
    assert claim.source.count("local function change") == 1


async def test_wrong_key_count_is_refused(redis_client, scripts) -> None:
    with pytest.raises(ValueError):
        await scripts.call(redis_client, "heartbeat", ["{x}:a", "{x}:b"], ["d", 1, 1, "", "", ""])


async def test_noscript_reloads(redis_client, scripts, backend) -> None:
    await scripts.load(redis_client)
    await redis_client.script_flush()
    reply = await scripts.call(redis_client, "rate-limit", ["{x}:rate"], [1000, 100, 5, 1])
    assert [int(x) for x in reply] == [1, 4, 0, 100]


async def test_a_broken_script_fails_at_start_up(real_redis, tmp_path: Path) -> None:
    (tmp_path / "broken-1.lua").write_text("local x = = 1\nreturn x\n")
    registry = ScriptRegistry(tmp_path)
    with pytest.raises(ResponseError):
        await registry.load(real_redis)


def test_file_names_must_carry_the_key_count(tmp_path: Path) -> None:
    (tmp_path / "nokeys.lua").write_text("return 1\n")
    with pytest.raises(ValueError):
        ScriptRegistry(tmp_path)
