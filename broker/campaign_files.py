"""A campaign's file and template, checked before anything is stored: the CSV read with the
standard library's ``csv`` module one row at a time, every number normalised to E.164,
numbers repeated in the file folded, each row's message rendered and measured.

What this module finds is pure: the suppression list (in Redis) is asked afterwards, by
:mod:`broker.campaigns`, for the unique numbers this module hands back.

The file: UTF-8 with or without a BOM, comma- or semicolon-separated (whichever the
header row has more of), a header row naming the columns (names compared with the
surrounding spaces dropped), at most :data:`MAX_FILE_BYTES` and :data:`MAX_ROWS` rows
after the header. Blank lines are passed over (they still count in the row numbers,
which start at 1 on the line after the header, as a spreadsheet shows them one lower).

The template: ``{column}`` is that row's value of the column; ``{{`` and ``}}`` are
literal braces; nothing else is evaluated. A lone ``{`` or ``}`` is an error.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from typing import IO

import msgspec
import phonenumbers

from broker import errors
from broker.segments import count_segments
from broker.validation import MAX_MESSAGE_CHARS

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_ROWS = 100_000
MAX_REPORTED = 100
"""The most invalid rows a report lists (it counts them all)."""
SNIFF_BYTES = 8 * 1024
_TEMPLATE_PART = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class FileRejected(errors.InvalidInput):
    """The file, or the template, cannot make a campaign: nothing was stored."""

    code = "invalid_campaign_file"

    def __init__(self, code: str, detail: str, *, field: str = "file") -> None:
        super().__init__(detail, field=field)
        self.code = code


class FileTooLarge(FileRejected):
    """The file is larger than a campaign takes (413)."""


class RowProblem(msgspec.Struct, frozen=True):
    row: int
    field: str
    detail: str


class Template(msgspec.Struct, frozen=True):
    """A template split into literal text and column references, in order."""

    parts: tuple[str | int, ...]  # a str is literal text, an int the index into ``columns``
    columns: tuple[str, ...]

    def render(self, values: list[str] | tuple[str, ...]) -> str:
        return "".join(p if isinstance(p, str) else values[p] for p in self.parts)


def parse_template(template: str) -> Template:
    """Split ``template``; :class:`FileRejected` for a lone brace or an empty ``{}``."""
    parts: list[str | int] = []
    columns: list[str] = []
    last = 0
    for match in _TEMPLATE_PART.finditer(template):
        parts.append(template[last : match.start()])
        last = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            parts.append(token[0])
        elif token in ("{", "}"):
            raise FileRejected(
                "invalid_template",
                f"the template has a lone '{token}' at character {match.start() + 1}: write {token}{token} for a brace",
                field="template",
            )
        else:
            name = (match.group(1) or "").strip()
            if not name:
                raise FileRejected("invalid_template", "the template has an empty {}: name a column", field="template")
            if name not in columns:
                columns.append(name)
            parts.append(columns.index(name))
    parts.append(template[last:])
    return Template(tuple(p for p in parts if p != ""), tuple(columns))


class CheckedRow(msgspec.Struct, array_like=True, frozen=True):
    """A valid row as stored: its row number, the number in E.164, the template's values."""

    row: int
    to: str
    values: list[str]


class CheckedFile(msgspec.Struct):
    """What the file holds once checked: the rows that may be sent (numbers unique, not yet
    checked against the suppression list), and the counts of the report. Each valid row
    is kept as its stored JSON (a :class:`CheckedRow`), beside its number: a third of
    the memory of the rows as objects."""

    rows: int = 0  # non-blank data rows
    valid: list[bytes] = msgspec.field(default_factory=list)
    numbers: list[str] = msgspec.field(default_factory=list)  # of each valid row
    invalid: list[RowProblem] = msgspec.field(default_factory=list)  # the first MAX_REPORTED
    invalid_rows: int = 0
    duplicates: int = 0
    segments: list[int] = msgspec.field(default_factory=list)  # of each valid row's message


def _delimiter(head: str) -> str:
    first_line = head.split("\n", 1)[0]
    return ";" if first_line.count(";") > first_line.count(",") else ","


def _looks_like_number(cell: str, region: str | None) -> bool:
    try:
        return phonenumbers.is_possible_number(phonenumbers.parse(cell, region))
    except phonenumbers.NumberParseException:
        return False


def normalise_number(cell: str, region: str | None) -> str | None:
    """A cell as an E.164 number (a national number read in ``region``), or None."""
    if not cell:
        return None
    try:
        parsed = phonenumbers.parse(cell, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    number = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return str(number) if len(number) <= 16 else None


def check_file(stream: IO[bytes], template: Template, phone_column: str, region: str | None) -> CheckedFile:
    """Read and check the file (see the module); :class:`FileRejected` (nothing kept)
    when it cannot make a campaign at all. Runs in a thread: it is CPU work."""
    stream.seek(0, io.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    if size > MAX_FILE_BYTES:
        raise FileTooLarge("file_too_large", f"the file is {size:,} bytes; a campaign takes at most {MAX_FILE_BYTES:,}")
    head = stream.read(SNIFF_BYTES)
    stream.seek(0)
    if b"\x00" in head:
        raise FileRejected("not_csv", "the file is not a CSV file: it holds binary data")
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    try:
        # Not final unless it is the whole file: the sniffed bytes may end inside a character.
        head_text = decoder.decode(head, final=len(head) == size)
    except UnicodeDecodeError:
        raise FileRejected("not_utf8", "the file is not UTF-8 text: save it as CSV UTF-8") from None
    if not head_text.strip():
        raise FileRejected("no_header", "the file is empty: it needs a header row naming its columns")
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    reader = csv.reader(text, delimiter=_delimiter(head_text.lstrip("\ufeff")))
    checked = CheckedFile()
    try:
        header = next(reader, None)
        while header is not None and not any(c.strip() for c in header):
            header = next(reader, None)
        if header is None:
            raise FileRejected("no_header", "the file is empty: it needs a header row naming its columns")
        names = [c.strip() for c in header]
        if phone_column not in names:
            if any(_looks_like_number(c.strip(), region) for c in header if c.strip()):
                raise FileRejected(
                    "no_header",
                    "the first row holds data (a phone number), not column names: add a header row",
                )
            raise FileRejected(
                "no_phone_column",
                f"the header has no column {phone_column!r} (it has {', '.join(repr(n) for n in names[:20])}); "
                "name the phone column in phone_column",
                field="phone_column",
            )
        unknown = [c for c in template.columns if c not in names]
        if unknown:
            raise FileRejected(
                "unknown_template_column",
                f"the template names {', '.join('{' + c + '}' for c in unknown)}, which the file has no column for",
                field="template",
            )
        value_indexes = [names.index(c) for c in template.columns]
        _check_rows(reader, (phone_column, names.index(phone_column)), value_indexes, template, region, checked)
    except UnicodeDecodeError:
        raise FileRejected("not_utf8", "the file is not UTF-8 text: save it as CSV UTF-8") from None
    except csv.Error as exc:
        raise FileRejected("not_csv", f"the file is not a CSV file: {exc}") from None
    finally:
        text.detach()
    return checked


def _check_rows(
    reader: Iterator[list[str]],
    phone: tuple[str, int],
    value_indexes: list[int],
    template: Template,
    region: str | None,
    checked: CheckedFile,
) -> None:
    seen: set[str] = set()
    encode = msgspec.json.Encoder().encode
    columns = template.columns
    phone_column, phone_index = phone

    def problem(row: int, field: str, detail: str) -> None:
        checked.invalid_rows += 1
        if len(checked.invalid) < MAX_REPORTED:
            checked.invalid.append(RowProblem(row, field, detail))

    for row, cells in enumerate(reader, start=1):
        if not any(c.strip() for c in cells):
            continue
        checked.rows += 1
        if checked.rows > MAX_ROWS:
            raise FileRejected("too_many_rows", f"the file has more than {MAX_ROWS:,} rows; split it")
        raw = cells[phone_index].strip() if phone_index < len(cells) else ""
        to = normalise_number(raw, region)
        if to is None:
            problem(row, phone_column, "no phone number" if not raw else f"{raw!r} is not a phone number")
            continue
        values = [cells[i].strip() if i < len(cells) else "" for i in value_indexes]
        missing = next((columns[n] for n, v in enumerate(values) if not v), None)
        if missing is not None:
            problem(row, missing, f"no value for {{{missing}}}")
            continue
        message = template.render(values)
        if len(message) > MAX_MESSAGE_CHARS:
            problem(row, "template", f"the message is {len(message):,} characters; at most {MAX_MESSAGE_CHARS:,}")
            continue
        if to in seen:
            checked.duplicates += 1
            continue
        seen.add(to)
        checked.valid.append(encode(CheckedRow(row, to, values)))
        checked.numbers.append(to)
        checked.segments.append(count_segments(message).count)
