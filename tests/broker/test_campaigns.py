"""Campaigns in the broker (fakeredis, each real Redis, the Cluster): the report of an
upload, a bad file storing nothing, the rows queued once each with their rendered text
and campaign id (a chunk queued again after a crash queues nothing), the daily quota
pausing a campaign until it is raised, numbers suppressed after the upload skipped,
and a cancel reaching every message no phone holds."""

from __future__ import annotations

import io

import msgspec
import pytest

from broker import Broker, errors
from broker.campaign_files import FileRejected, FileTooLarge
from broker.campaigns import CampaignRequest, Plan
from broker.records import Account, LimitChange
from tests.support.fleet import drain, redis_snapshot, self_managed


def csv_file(text: str) -> io.BytesIO:
    return io.BytesIO(text.encode())


def request(**values: object) -> CampaignRequest:
    return CampaignRequest(**{"name": "spring", "template": "Hi {name}, code {code}", **values})  # type: ignore[arg-type]


FILE = (
    "phone;name;code\n"
    "+15550000001;Ann;A1\n"  # 1 valid
    "5550000002;Bob;B2\n"  # 2 valid (a national number, read as US)
    "not a number;Cy;C3\n"  # 3 invalid phone
    "+15550000001;Ann again;A4\n"  # 4 duplicate of row 1
    "+15550000005;;E5\n"  # 5 invalid: no name
    "+15550000006;Fay;F6\n"  # 6 opted out
    "\n"  # 7 blank: not counted
    "+15550000008;Gus;G8\n"  # 8 valid
)


async def run_until_settled(broker: Broker, account: Account, rounds: int = 50) -> None:
    for _ in range(rounds):
        if not await broker.campaigns.work(account.shard):
            return
    raise AssertionError("the campaign still had work after many rounds")


async def test_an_upload_is_checked_row_by_row_and_stored_as_a_draft(broker: Broker) -> None:
    account, _ = await self_managed(broker)
    await broker.suppressions.add(account, "+15550000006")
    campaign = await broker.campaigns.create(account, request(default_country="US"), csv_file(FILE))
    report = campaign.report
    assert (report.rows, report.valid, report.invalid_rows, report.duplicates, report.opted_out) == (7, 3, 2, 1, 1)
    assert [(p.row, p.field) for p in report.invalid] == [(3, "phone"), (5, "name")]
    assert (report.max_segments, report.segments) == (1, 3)
    assert campaign.state == "draft" and campaign.counts.queued == 0
    assert (await broker.message_log.account_counts(account))["total"] == 0  # nothing queued
    listed = await broker.campaigns.page(account)
    assert [c.id for c in listed.items] == [campaign.id]


async def test_a_file_that_cannot_make_a_campaign_stores_nothing(broker: Broker) -> None:
    account, _ = await self_managed(broker)
    before = await redis_snapshot(broker.redis)
    cases: list[tuple[bytes, CampaignRequest, str]] = [
        (b"\x89PNG\r\n\x1a\n\x00\x00", request(), "not_csv"),
        ("phone,name,code\n+15550000001,Jos\xe9,1\n".encode("latin-1"), request(), "not_utf8"),
        (b"", request(), "no_header"),
        (b"+15550000001,Ann,1\n", request(), "no_header"),
        (b"number,name,code\n+15550000001,Ann,1\n", request(), "no_phone_column"),
        (b"phone,name\n+15550000001,Ann\n", request(), "unknown_template_column"),
        (b"phone,name,code\n", request(template="Hi {name"), "invalid_template"),
        (b"phone\n" + b"+15550000001\n" * 100_001, request(template="hi"), "too_many_rows"),
    ]
    for body, asked, code in cases:
        with pytest.raises(FileRejected) as refused:
            await broker.campaigns.create(account, asked, io.BytesIO(body))
        assert refused.value.code == code, (code, refused.value.detail)
    with pytest.raises(FileTooLarge):
        await broker.campaigns.create(account, request(template="x"), io.BytesIO(b"phone\n" + b"1" * 10 * 1024 * 1024))
    with pytest.raises(errors.DeviceNotFound):
        await broker.campaigns.create(account, request(device_id="nosuchdevice"), csv_file(FILE))
    assert await redis_snapshot(broker.redis) == before


async def test_every_valid_row_becomes_one_message_with_its_text_even_when_a_chunk_is_queued_again(
    broker: Broker,
) -> None:
    account, [phone] = await self_managed(broker)
    rows = "".join(f"+1555001{i:04d},N{i},{i}\n" for i in range(1200))
    campaign = await broker.campaigns.create(
        account, request(device_id=phone.device_id), csv_file("phone,name,code\n" + rows)
    )
    await broker.campaigns.start(account, campaign.id)
    shard = broker.shard(account.shard)
    key = shard.campaign(account.id, campaign.id)
    # The first chunk (500 rows), then the state a process leaves when it dies after the
    # enqueue call and before recording it: the plan written, the chunk not counted, its
    # ids not listed.
    assert await broker.campaigns.advance(account.shard, account.id, campaign.id, float("inf"), chunks=1)
    assert await broker.redis.hget(key, "chunk") == b"1"
    await broker.redis.hset(key, mapping={"chunk": 0, "next_row": 0, "plan": msgspec.json.encode(Plan(0, 0, 500, []))})
    await broker.redis.delete(shard.campaign_sent(account.id, campaign.id))
    await run_until_settled(broker, account)
    done = await broker.campaigns.get(account, campaign.id)
    assert done.state == "done" and done.counts.queued == 1200, done
    texts = []
    cursor = None
    while True:
        page = await broker.message_log.page(account, campaign=campaign.id, limit=500, cursor=cursor)
        texts += [(m.to, m.message, m.campaign) for m in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(texts) == sorted((f"+1555001{i:04d}", f"Hi N{i}, code {i}", campaign.id) for i in range(1200))
    assert (await broker.message_log.account_counts(account))["total"] == 1200  # none twice
    assert await broker.redis.llen(shard.campaign_sent(account.id, campaign.id)) == 1200
    with pytest.raises(errors.CampaignStateConflict):
        await broker.campaigns.start(account, campaign.id)


async def test_the_daily_quota_pauses_a_campaign_until_it_is_raised(broker: Broker, clock) -> None:
    account = await broker.accounts.create("api@example.com", "api_only")
    await broker.limits.set(account.id, LimitChange(daily_quota=30))
    account = await broker.accounts.get(account.id)
    rows = "".join(f"+1555002{i:04d},N{i},{i}\n" for i in range(50))
    campaign = await broker.campaigns.create(account, request(), csv_file("phone,name,code\n" + rows))
    await broker.campaigns.start(account, campaign.id)
    await run_until_settled(broker, account)
    paused = await broker.campaigns.get(account, campaign.id)
    assert (paused.state, paused.reason, paused.counts.queued) == ("paused", "quota_exceeded", 30)
    await broker.limits.set(account.id, LimitChange(daily_quota=100))
    clock.now_ms += 5_000
    await run_until_settled(broker, account)
    done = await broker.campaigns.get(account, campaign.id)
    assert (done.state, done.counts.queued) == ("done", 50)


async def test_numbers_suppressed_after_the_upload_are_skipped_and_cancel_stops_the_rest(broker: Broker) -> None:
    account, [phone] = await self_managed(broker)
    rows = "".join(f"+1555003{i:04d},N{i},{i}\n" for i in range(10))
    campaign = await broker.campaigns.create(
        account, request(device_id=phone.device_id), csv_file("phone,name,code\n" + rows)
    )
    await broker.suppressions.add(account, "+15550030003")
    await broker.campaigns.start(account, campaign.id)
    await run_until_settled(broker, account)
    done = await broker.campaigns.get(account, campaign.id)
    assert (done.state, done.counts.queued, done.counts.skipped) == ("done", 9, 1)
    claimed = [m.id for m in await broker.messages.claim(phone.ref, 4)]
    cancelled = await broker.campaigns.cancel(account, campaign.id)
    assert cancelled.state == "cancelled"
    await run_until_settled(broker, account)
    after = await broker.campaigns.get(account, campaign.id)
    assert (after.counts.cancelled, after.counts.skipped) == (5, 6)
    for message_id in claimed:
        assert (await broker.message_log.get(account.shard, message_id)).status == "claimed"
    assert await drain(broker, phone, 10) == []
    with pytest.raises(errors.CampaignStateConflict):
        await broker.campaigns.cancel(account, campaign.id)


async def test_a_campaign_is_the_senders_own(broker: Broker) -> None:
    account, _ = await self_managed(broker)
    other, _ = await self_managed(broker, "other@example.com")
    campaign = await broker.campaigns.create(account, request(), csv_file("phone,name,code\n+15550000001,A,1\n"))
    with pytest.raises(errors.CampaignNotFound):
        await broker.campaigns.get(other, campaign.id)
    with pytest.raises(errors.CampaignNotFound):
        await broker.campaigns.start(other, campaign.id)


async def test_a_draft_never_started_and_a_finished_campaign_are_deleted_in_time(broker: Broker, clock) -> None:
    account, _ = await self_managed(broker)
    body = "phone,name,code\n+15550000001,A,1\n"
    draft = await broker.campaigns.create(account, request(), csv_file(body))
    finished = await broker.campaigns.create(account, request(), csv_file(body))
    await broker.campaigns.start(account, finished.id)
    await run_until_settled(broker, account)
    assert (await broker.campaigns.get(account, finished.id)).state == "done"
    clock.now_ms += broker.settings.campaign_draft_ttl_seconds * 1000 + 1
    await broker.campaigns.work(account.shard)
    with pytest.raises(errors.CampaignNotFound):
        await broker.campaigns.get(account, draft.id)
    assert [c.id for c in (await broker.campaigns.page(account)).items] == [finished.id]
    clock.now_ms += broker.settings.campaign_retention_days * 86_400_000
    await broker.campaigns.work(account.shard)
    assert (await broker.campaigns.page(account)).items == []
    shard = broker.shard(account.shard)
    assert [k for k in await broker.message_log.counters(account.shard) if k.startswith("c:")] == []
    assert not await broker.redis.exists(shard.campaign_rows(account.id, draft.id), shard.campaigns_expiry())


async def test_a_send_limit_that_holds_a_campaign_long_pauses_it_and_it_resumes(broker: Broker, clock) -> None:
    account, _ = await self_managed(broker)
    await broker.limits.set(account.id, LimitChange(sends_per_second=1, sends_burst=10))
    account = await broker.accounts.get(account.id)
    rows = "".join(f"+1555004{i:04d},N{i},{i}\n" for i in range(25))
    campaign = await broker.campaigns.create(account, request(), csv_file("phone,name,code\n" + rows))
    await broker.campaigns.start(account, campaign.id)
    await run_until_settled(broker, account)
    paused = await broker.campaigns.get(account, campaign.id)
    assert (paused.state, paused.reason, paused.counts.queued) == ("paused", "rate_limited", 10)
    assert paused.resume_at == clock() + 10_000  # ten more messages at one a second
    clock.now_ms += 10_000
    await run_until_settled(broker, account)
    again = await broker.campaigns.get(account, campaign.id)
    # The last five wait 5 s: a wait that short keeps it sending.
    assert (again.state, again.reason, again.counts.queued) == ("sending", "", 20)
    assert again.resume_at == clock() + 5_000
    clock.now_ms += 5_000
    await run_until_settled(broker, account)
    done = await broker.campaigns.get(account, campaign.id)
    assert (done.state, done.reason, done.counts.queued) == ("done", "", 25)


async def test_national_numbers_are_read_in_the_accounts_country_unless_the_upload_names_another(
    broker: Broker,
) -> None:
    account, _ = await self_managed(broker)
    body = "phone,name,code\n030 1234567,A,1\n+1 555 200 0000,B,2\n"

    async def numbers(campaign_id: str) -> list[str]:
        rows = await broker.redis.lrange(broker.shard(account.shard).campaign_rows(account.id, campaign_id), 0, -1)
        return [msgspec.json.decode(r)[1] for r in rows]

    international_only = await broker.campaigns.create(account, request(), csv_file(body))
    assert [(p.row, p.field) for p in international_only.report.invalid] == [(1, "phone")]
    account = await broker.accounts.set_default_country(account, "de")
    assert (await broker.accounts.get(account.id)).default_country == "DE"
    german = await broker.campaigns.create(account, request(), csv_file(body))
    assert await numbers(german.id) == ["+49301234567", "+15552000000"]
    swiss = await broker.campaigns.create(account, request(default_country="CH"), csv_file(body))
    assert await numbers(swiss.id) == ["+41301234567", "+15552000000"]
    with pytest.raises(errors.InvalidInput):
        await broker.accounts.set_default_country(account, "ZZ")
    with pytest.raises(errors.InvalidInput):
        await broker.campaigns.create(account, request(default_country="XX"), csv_file(body))
    account = await broker.accounts.set_default_country(account, None)
    assert (await broker.accounts.get(account.id)).default_country == ""
