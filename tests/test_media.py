"""Synthetic databases, the media format, striping, restore sequencing and rowsets."""

from __future__ import annotations

import hashlib
import json
import random
import struct
import zlib
from pathlib import Path

import pytest

from vdisim.engine.database import (
    CREATE_LSN,
    PAGE_HEADER_SIZE,
    PAGE_SIZE,
    Database,
    lsn_str,
)
from vdisim.engine.media import (
    FAMILY_HEADER_SIZE,
    LAYOUTS,
    SET_HEADER_SIZE,
    TRAILER_SIZE,
    BackupKind,
    BackupSet,
    BackupSetInfo,
    FamilyLayout,
    LogicalStream,
    PreparedBackup,
    RestoreAssembler,
    apply_restore,
    build_backup,
    filelistonly_rowset,
    header_only,
    headeronly_rowset,
    labelonly_rowset,
    page_runs,
    recover_database,
)
from vdisim.engine.sqlerrors import SqlError

DOCS = Path(__file__).resolve().parent.parent / "docs" / "media.md"
MIB = 1 << 20


# -- helpers ------------------------------------------------------------------------------


def backup(db: Database, kind: BackupKind, *, copy_only: bool = False, checksum: bool = True,
           compression: bool = False, name: str | None = None) -> PreparedBackup:
    return build_backup(db, kind, copy_only=copy_only, name=name, description=None,
                        checksum=checksum, compression=compression)


def family_bytes(layout: FamilyLayout, i: int, rng: random.Random | None = None) -> bytes:
    """Family ``i`` as the devices would receive it, filled in random-sized pieces."""
    total = layout.family_length(i)
    buf = bytearray(total)
    offset = 0
    while offset < total:
        size = rng.randrange(1, 3 * 65536) if rng else total
        offset += layout.fill(i, offset, memoryview(buf)[offset:offset + size])
    return bytes(buf)


def media(prepared: PreparedBackup, families: int = 1, stripe: int = 65536,
          block: int = 512, seed: int | None = None) -> list[bytes]:
    layout = FamilyLayout.for_backup(prepared, families, stripe, block)
    rng = random.Random(seed) if seed is not None else None
    return [family_bytes(layout, i, rng) for i in range(families)]


def feed(assembler: RestoreAssembler, slot: int, data: bytes, seed: int | None = None) -> None:
    rng = random.Random(seed)
    offset = 0
    while offset < len(data):
        size = rng.randrange(1, 100_000) if seed is not None else len(data)
        assembler.reader(slot).feed(data[offset:offset + size])
        offset += size


def read_media(families: list[bytes], seed: int | None = 1, **kw: bool) -> BackupSet:
    assembler = RestoreAssembler(len(families))
    for slot, data in enumerate(families):
        feed(assembler, slot, data, seed)
    return assembler.finish(**kw)


def roundtrip(prepared: PreparedBackup, families: int = 2, **kw: int) -> BackupSet:
    result = read_media(media(prepared, families, **kw))
    prepared.commit()
    return result


def sql_number(exc: pytest.ExceptionInfo[SqlError]) -> int:
    return exc.value.number


@pytest.fixture
def db() -> Database:
    return Database.create("sales", 96, seed=11, db_id=5)


# -- database ------------------------------------------------------------------------------


def test_page_header_exact_bytes(db: Database) -> None:
    start = 7 * PAGE_SIZE
    body = bytes(db.data[start + PAGE_HEADER_SIZE:start + PAGE_SIZE])
    expected = b"VPG1" + struct.pack("<IQII", 7, CREATE_LSN, 5, zlib.crc32(body)) + bytes(40)
    assert bytes(db.data[start:start + PAGE_HEADER_SIZE]) == expected
    assert len(db.data) == 96 * PAGE_SIZE


def test_create_is_deterministic_and_compressible() -> None:
    a = Database.create("a", 40, seed=3, db_id=5)
    b = Database.create("a", 40, seed=3, db_id=5)
    c = Database.create("a", 40, seed=4, db_id=5)
    assert a.content_hash() == b.content_hash() != c.content_hash()
    assert a.guid == b.guid != c.guid
    assert len(zlib.compress(bytes(a.data), 1)) < 0.8 * len(a.data)
    assert a.verify_pages() == []


def test_workload_changes_pages_logs_after_images_and_keeps_checksums(db: Database) -> None:
    db.run_workload(30, seed=5)
    assert db.lsn == CREATE_LSN + 30
    assert [r.lsn for r in db.log] == list(range(CREATE_LSN + 1, CREATE_LSN + 31))
    last = {r.page_id: r for r in db.log}
    assert set(last) == db.changed_since_full
    for page_id, rec in last.items():
        assert bytes(db.page(page_id)) == rec.image
        assert db.page_lsn(page_id) == rec.lsn
    assert db.verify_pages() == []
    again = Database.create("sales", 96, seed=11, db_id=5)
    again.run_workload(30, seed=5)
    assert again.content_hash() == db.content_hash()


def test_verify_pages_reports_damaged_pages(db: Database) -> None:
    db.data[9 * PAGE_SIZE + 100] ^= 0xFF
    db.data[2 * PAGE_SIZE + 5] ^= 0x01  # page id field of page 2
    assert db.verify_pages() == [2, 9]


def test_simple_recovery_keeps_no_log(db: Database) -> None:
    db.set_recovery_model("SIMPLE")
    db.run_workload(5, seed=1)
    assert db.log == []
    assert lsn_str(db.lsn) == str(CREATE_LSN + 5)


# -- the logical stream --------------------------------------------------------------------


def test_logical_stream_reads_across_segments() -> None:
    stream = LogicalStream([b"abc", memoryview(b"defg"), b"", bytearray(b"hi")])
    out = bytearray(6)
    assert stream.length == 9
    assert stream.readinto(1, memoryview(out)) == 6
    assert bytes(out) == b"bcdefg"
    assert stream.readinto(7, memoryview(out)) == 2
    assert bytes(out[:2]) == b"hi"
    assert stream.readinto(9, memoryview(out)) == 0


def test_full_backup_stream_layout_exact_bytes(db: Database) -> None:
    prepared = backup(db, "full", name="nightly")
    stream, info = prepared.stream, prepared.info
    assert stream.length == SET_HEADER_SIZE + 96 * PAGE_SIZE + TRAILER_SIZE
    header = stream.read(0, SET_HEADER_SIZE)
    assert header[:4] == b"VSET"
    assert struct.unpack_from("<HHBBHII", header, 4) == (1, 4096, 1, 1, 2, 8192, 5)
    assert struct.unpack_from("<I", header, 4092)[0] == zlib.crc32(header[:4092])
    # the payload is the database itself (zero copy: later changes show through)
    assert stream.read(SET_HEADER_SIZE, 2 * PAGE_SIZE) == bytes(db.data[:2 * PAGE_SIZE])
    db.data[10] ^= 0xFF
    assert stream.read(SET_HEADER_SIZE + 10, 1) == bytes(db.data[10:11])
    db.data[10] ^= 0xFF
    trailer = stream.read(stream.length - TRAILER_SIZE, TRAILER_SIZE)
    # docs/media.md: SHA-256 of the set header and each page's 64-byte header, no bodies
    page_headers = b"".join(bytes(db.data[p * PAGE_SIZE:p * PAGE_SIZE + PAGE_HEADER_SIZE])
                            for p in range(96))
    digest = hashlib.sha256(header + page_headers).digest()
    assert trailer[:4] == b"VEND" and trailer[32:] == digest
    assert struct.unpack_from("<QQ", trailer, 16) == (96 * PAGE_SIZE, stream.length)
    assert BackupSetInfo.from_header_bytes(header) == info


def test_diff_and_log_payload_records(db: Database) -> None:
    backup(db, "full").commit()
    db.run_workload(6, seed=2)
    changed = sorted(db.changed_since_full)
    runs = page_runs(changed)
    diff = backup(db, "diff")
    first, count = runs[0]
    run_header = diff.stream.read(SET_HEADER_SIZE, 16)
    assert run_header == b"VRUN" + struct.pack("<II", first, count) + bytes(4)
    assert diff.info.data_pages == len(changed) and diff.info.record_count == len(runs)
    log = backup(db, "log")
    rec = db.log[0]
    assert log.stream.read(SET_HEADER_SIZE, 16) == b"VLOG" + struct.pack("<IQ", rec.page_id,
                                                                         rec.lsn)
    assert log.stream.read(SET_HEADER_SIZE + 16, PAGE_SIZE) == rec.image


def test_page_runs_coalesce() -> None:
    assert page_runs([5, 1, 2, 3, 9, 10, 2]) == [(1, 3), (5, 1), (9, 2)]


# -- striping ------------------------------------------------------------------------------


def test_family_geometry_exact_lengths() -> None:
    layout = FamilyLayout(300_000, 2, 65536, 4096)
    assert layout.stripe_count == 5
    assert layout.family_data_length(0) == 2 * 65536 + (300_000 - 4 * 65536)
    assert layout.family_length(0) == 43 * 4096
    assert layout.family_length(1) == 4096 + 2 * 65536
    big_block = FamilyLayout(100, 3, 65536, 65536)
    assert big_block.header_area == 65536
    assert [big_block.family_length(i) for i in range(3)] == [131072, 65536, 65536]


@pytest.mark.parametrize("bad", [(10, 1, 65536, 1000), (10, 1, 65536 + 512, 512),
                                 (10, 0, 65536, 512), (10, 65, 65536, 512),
                                 (10, 1, 8 * MIB, 512)])
def test_family_layout_rejects_bad_geometry(bad: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        FamilyLayout(*bad)


def test_families_hold_round_robin_stripes_exact_bytes(db: Database) -> None:
    prepared = backup(db, "full")
    families = media(prepared, 3, stripe=65536, block=1024)
    logical = prepared.stream.read(0, prepared.stream.length)
    stripes = [logical[k:k + 65536] for k in range(0, len(logical), 65536)]
    for i, data in enumerate(families):
        assert data[:4] == b"VFAM"
        assert struct.unpack_from("<III", data, 12) == (i, 3, 65536)
        mine = b"".join(stripes[i::3])
        assert data[4096:4096 + len(mine)] == mine
        assert data[4096 + len(mine):] == bytes(len(data) - 4096 - len(mine))
        assert len(data) % 1024 == 0


def test_fill_in_random_pieces_equals_fill_at_once(db: Database) -> None:
    prepared = backup(db, "full", compression=True)
    layout = FamilyLayout.for_backup(prepared, 4, 65536, 512)
    for i in range(4):
        assert family_bytes(layout, i, random.Random(i)) == family_bytes(layout, i)
    out = bytearray(10)
    assert layout.fill(0, layout.family_length(0), memoryview(out)) == 0


# -- restore: reading the media back --------------------------------------------------------


@pytest.mark.parametrize(("families", "stripe", "block", "compression"), [
    (1, 65536, 512, False), (3, 65536, 65536, False), (2, 4 * MIB, 4096, True),
    (7, 131072, 512, True), (64, 65536, 512, False)])
def test_full_roundtrip_any_read_sizes(db: Database, families: int, stripe: int, block: int,
                                       compression: bool) -> None:
    prepared = backup(db, "full", compression=compression)
    data = media(prepared, families, stripe, block, seed=families)
    result = read_media(data, seed=families + 100)
    assert result.info == prepared.info
    catalog: dict[str, Database] = {}
    apply_restore(catalog, result, "copy", recovery=True, replace=False)
    assert catalog["copy"].content_hash() == db.content_hash()
    assert catalog["copy"].verify_pages() == []


def test_families_may_arrive_in_any_device_order(db: Database) -> None:
    data = media(backup(db, "full"), 3)
    assembler = RestoreAssembler(3)
    for slot, family in enumerate(reversed(data)):
        feed(assembler, slot, family, seed=slot)
    assert assembler.finish().info.kind == "full"


def test_compressed_backup_is_smaller_and_flagged(db: Database) -> None:
    plain, packed = backup(db, "full", copy_only=True), backup(db, "full", compression=True)
    assert packed.info.compressed_backup_size < packed.info.backup_size
    assert plain.info.compressed_backup_size == plain.info.backup_size
    assert packed.info.backup_size == plain.info.backup_size
    assert packed.stream.length == packed.info.compressed_backup_size
    row = headeronly_rowset([packed.info]).dicts()[0]
    assert row["Compressed"] is True and row["CompressedBackupSize"] < row["BackupSize"]


def test_header_only_needs_just_the_family_header_and_set_header(db: Database) -> None:
    prepared = backup(db, "full", name="n1")
    data = media(prepared, 2, block=512)
    assembler = RestoreAssembler(2, metadata_only=True)
    needed = FAMILY_HEADER_SIZE + SET_HEADER_SIZE
    assembler.reader(0).feed(data[0][:needed - 1])
    assert not assembler.header_ready
    with pytest.raises(SqlError) as exc:
        header_only(assembler)
    assert sql_number(exc) == 3208
    assembler.reader(0).feed(data[0][needed - 1:needed])
    assert header_only(assembler) == prepared.info
    label = labelonly_rowset(assembler.family_headers()[0]).dicts()[0]
    assert label["FamilyCount"] == 2 and label["FamilySequenceNumber"] == 1


# -- restore: damage and media-set errors ---------------------------------------------------


def damaged(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x5A]) + data[offset + 1:]


def test_damaged_page_with_checksum_reports_the_page(db: Database) -> None:
    data = media(backup(db, "full", checksum=True))
    offset = FAMILY_HEADER_SIZE + SET_HEADER_SIZE + 17 * PAGE_SIZE + 700
    with pytest.raises(SqlError) as exc:
        read_media([damaged(data[0], offset)])
    assert exc.value.numbers == [3183]
    assert exc.value.messages[0].text == (
        'RESTORE detected an error on page (1:17) in database "sales" as read from the '
        "backup set.")


def test_damage_without_checksum_is_still_caught(db: Database) -> None:
    """The body is outside the trailer digest; the always-on page CRC check gives 3189."""
    data = media(backup(db, "full", checksum=False))
    offset = FAMILY_HEADER_SIZE + SET_HEADER_SIZE + 17 * PAGE_SIZE + 700
    with pytest.raises(SqlError) as exc:
        read_media([damaged(data[0], offset)])
    assert exc.value.numbers == [3189]


def expected_digest(prepared: PreparedBackup) -> bytes:
    """docs/media.md "What the checksums cover", computed independently of the code: the
    set header, then the uncompressed payload with every 8128-byte page body left out."""
    stream, info = prepared.stream, prepared.info
    header = stream.read(0, SET_HEADER_SIZE)
    payload = stream.read(SET_HEADER_SIZE, info.payload_length)
    kept = []
    if info.kind == "full":
        kept = [payload[p:p + PAGE_HEADER_SIZE] for p in range(0, len(payload), PAGE_SIZE)]
    pos = 0
    while info.kind != "full" and pos < len(payload):
        pages = struct.unpack_from("<I", payload, pos + 8)[0] if info.kind == "diff" else 1
        kept.append(payload[pos:pos + 16])
        kept += [payload[pos + 16 + k * PAGE_SIZE:pos + 16 + k * PAGE_SIZE + PAGE_HEADER_SIZE]
                 for k in range(pages)]
        pos += 16 + pages * PAGE_SIZE
    return hashlib.sha256(header + b"".join(kept)).digest()


def test_trailer_digest_covers_headers_not_page_bodies(db: Database) -> None:
    """The trailer is the documented digest for every backup type, and building it reads no
    page body: bodies changed after build_backup (the payload is a zero-copy view of the
    database) leave it as it was, while the payload read back shows the changes."""
    full = backup(db, "full")
    full.commit()
    db.run_workload(9, seed=4)
    diff = backup(db, "diff")
    log = backup(db, "log")
    assert diff.info.record_count >= 2 and log.info.record_count == 9
    for prepared in (full, diff, log):
        want = expected_digest(prepared)
        for p in range(db.n_pages):  # damage every body: the digest must not notice
            db.data[p * PAGE_SIZE + PAGE_HEADER_SIZE + 9] ^= 0xFF
        end = prepared.stream.length
        trailer = prepared.stream.read(end - TRAILER_SIZE, TRAILER_SIZE)
        for p in range(db.n_pages):
            db.data[p * PAGE_SIZE + PAGE_HEADER_SIZE + 9] ^= 0xFF
        assert trailer[:4] == b"VEND" and trailer[32:] == want, prepared.info.kind
    packed = backup(db, "full", compression=True)  # compressed: every stored byte
    stream = packed.stream
    trailer = stream.read(stream.length - TRAILER_SIZE, TRAILER_SIZE)
    assert trailer[32:] == hashlib.sha256(stream.read(0, stream.length - TRAILER_SIZE)).digest()


@pytest.mark.parametrize("kind", ["diff", "log"])
def test_damaged_page_body_in_diff_and_log_backups(db: Database, kind: BackupKind) -> None:
    """A page body is outside the digest but its CRC32 is always checked on restore: 3183
    naming the page with CHECKSUM (backup flag or RESTORE ... WITH CHECKSUM), else 3189."""
    backup(db, "full").commit()
    db.run_workload(5, seed=8)
    prepared = backup(db, kind, checksum=False)
    first_page = struct.unpack_from("<I", prepared.stream.read(SET_HEADER_SIZE, 16), 4)[0]
    data = media(prepared)
    offset = FAMILY_HEADER_SIZE + SET_HEADER_SIZE + 16 + PAGE_HEADER_SIZE + 300
    assert read_media(data).info.kind == kind
    with pytest.raises(SqlError) as exc:
        read_media([damaged(data[0], offset)])
    assert exc.value.numbers == [3189]
    with pytest.raises(SqlError) as exc:
        read_media([damaged(data[0], offset)], verify_checksums=True)
    assert exc.value.numbers == [3183]
    assert f"page (1:{first_page})" in exc.value.messages[0].text


@pytest.mark.parametrize(("field", "checksum", "number"), [
    (8, True, 3189),  # page_lsn: not part of the page check, caught by the digest
    (30, True, 3189),  # reserved bytes: likewise
    (20, True, 3183),  # body_crc32: the page check names the page
    (20, False, 3189),
    (4, True, 3183),  # page_id
])
def test_damaged_page_header_is_detected(db: Database, field: int, checksum: bool,
                                         number: int) -> None:
    data = media(backup(db, "full", checksum=checksum))
    offset = FAMILY_HEADER_SIZE + SET_HEADER_SIZE + 17 * PAGE_SIZE + field
    with pytest.raises(SqlError) as exc:
        read_media([damaged(data[0], offset)])
    assert exc.value.numbers == [number]
    if number == 3183:
        assert "page (1:17)" in exc.value.messages[0].text


@pytest.mark.parametrize("offset", [FAMILY_HEADER_SIZE + 40,  # set header
                                    FAMILY_HEADER_SIZE + SET_HEADER_SIZE + 5])  # compressed
def test_damaged_set_header_or_compressed_data(db: Database, offset: int) -> None:
    data = media(backup(db, "full", compression=True))
    with pytest.raises(SqlError) as exc:
        read_media([damaged(data[0], offset)])
    assert sql_number(exc) == 3189


def test_family_header_magic_and_crc(db: Database) -> None:
    data = media(backup(db, "full"))[0]
    with pytest.raises(SqlError) as exc:
        feed(RestoreAssembler(1, ["dev1"]), 0, damaged(data, 0), seed=3)
    assert exc.value.numbers == [3242] and "'dev1'" in exc.value.messages[0].text
    with pytest.raises(SqlError) as exc:
        feed(RestoreAssembler(1), 0, damaged(data, 20), seed=3)
    assert sql_number(exc) == 3241


def test_media_family_count_mismatch(db: Database) -> None:
    data = media(backup(db, "full"), 3)
    with pytest.raises(SqlError) as exc:
        RestoreAssembler(2).reader(0).feed(data[0])
    assert exc.value.messages[0].text == (
        "The media set has 3 media families but only 2 are provided. "
        "All members must be provided.")
    with pytest.raises(SqlError) as exc:
        RestoreAssembler(4).reader(0).feed(data[0])
    assert sql_number(exc) == 3231


def test_duplicate_foreign_missing_and_truncated_families(db: Database) -> None:
    data = media(backup(db, "full"), 2)
    other = media(backup(db, "full", copy_only=True, name="other"), 2)
    duplicate = RestoreAssembler(2)
    duplicate.reader(0).feed(data[0])
    with pytest.raises(SqlError) as exc:
        duplicate.reader(1).feed(data[0])
    assert sql_number(exc) == 3227
    foreign = RestoreAssembler(2)
    foreign.reader(0).feed(data[0])
    with pytest.raises(SqlError) as exc:
        foreign.reader(1).feed(other[1])
    assert sql_number(exc) == 3258
    with pytest.raises(SqlError) as exc:
        foreign.finish()
    assert sql_number(exc) == 3132
    truncated = RestoreAssembler(2)
    truncated.reader(0).feed(data[0])
    truncated.reader(1).feed(data[1][:-512])
    with pytest.raises(SqlError) as exc:
        truncated.finish()
    assert sql_number(exc) == 3266
    with pytest.raises(SqlError) as exc:
        RestoreAssembler(1).finish()
    assert sql_number(exc) == 3208


def test_extra_bytes_after_the_family_are_ignored(db: Database) -> None:
    data = media(backup(db, "full"))
    assert read_media([data[0] + bytes(4096)]).info.kind == "full"


# -- backup rules and bookkeeping -----------------------------------------------------------


def test_backup_preconditions(db: Database) -> None:
    for kind, number in (("diff", 3035), ("log", 4214)):
        with pytest.raises(SqlError) as exc:
            backup(db, kind)  # type: ignore[arg-type]
        assert sql_number(exc) == number
    backup(db, "full").commit()
    db.set_recovery_model("SIMPLE")
    with pytest.raises(SqlError) as exc:
        backup(db, "log")
    assert sql_number(exc) == 4208
    db.set_recovery_model("FULL")
    with pytest.raises(SqlError) as exc:
        backup(db, "log")  # SIMPLE broke the log chain: a new full backup is needed
    assert sql_number(exc) == 4214
    db.state = "RESTORING"
    with pytest.raises(SqlError) as exc:
        backup(db, "full")
    assert sql_number(exc) == 927


def test_bookkeeping_only_on_commit_and_not_for_copy_only(db: Database) -> None:
    backup(db, "full")  # never committed: a failed BACKUP changes nothing
    assert db.last_full_lsn is None
    backup(db, "full", copy_only=True).commit()
    assert db.last_full_lsn is None
    full = backup(db, "full")
    full.commit()
    assert db.last_full_lsn == full.info.checkpoint_lsn == CREATE_LSN
    db.run_workload(8, seed=1)
    changed = set(db.changed_since_full)
    backup(db, "diff").commit()
    assert db.changed_since_full == changed
    backup(db, "log", copy_only=True).commit()
    assert len(db.log) == 8 and db.last_log_backup_lsn is None
    log = backup(db, "log")
    assert log.info.begins_log_chain and log.pages_count == 8
    log.commit()
    assert db.log == [] and db.last_log_backup_lsn == log.info.last_lsn == db.lsn + 1
    assert not backup(db, "log").info.begins_log_chain
    backup(db, "full").commit()
    assert db.changed_since_full == set()
    with pytest.raises(RuntimeError):
        log.commit()


def test_backup_messages(db: Database) -> None:
    full = backup(db, "full")
    assert [m.text for m in full.messages()] == [
        "Processed 96 pages for database 'sales', file 'sales' on file 1.",
        "Processed 2 pages for database 'sales', file 'sales_log' on file 1."]
    full.commit()
    db.run_workload(3, seed=9)
    assert [m.text for m in backup(db, "log").messages()] == [
        "Processed 3 pages for database 'sales', file 'sales_log' on file 1."]


# -- restore sequences ----------------------------------------------------------------------


class Chain:
    """full -> workload -> diff -> workload -> log1 -> workload -> log2, with the source's
    hash at each backup."""

    def __init__(self, db: Database) -> None:
        self.full = roundtrip(backup(db, "full"), 2)
        self.h_full = db.content_hash()
        db.run_workload(40, seed=1)
        self.diff = roundtrip(backup(db, "diff", compression=True), 3)
        self.h_diff = db.content_hash()
        db.run_workload(40, seed=2)
        self.log1 = roundtrip(backup(db, "log"), 1)
        self.h_log1 = db.content_hash()
        db.run_workload(40, seed=3)
        self.log2 = roundtrip(backup(db, "log", compression=True), 2)
        self.h_log2 = db.content_hash()


def restore(catalog: dict[str, Database], backup_set: BackupSet, *, recovery: bool = False,
            replace: bool = False, name: str = "copy") -> list[str]:
    messages = apply_restore(catalog, backup_set, name, recovery=recovery, replace=replace)
    return [m.text for m in messages]


def test_restore_chain_is_byte_identical_at_every_step(db: Database) -> None:
    chain = Chain(db)
    catalog: dict[str, Database] = {}
    assert restore(catalog, chain.full) == [
        "Processed 96 pages for database 'copy', file 'sales' on file 1.",
        "Processed 2 pages for database 'copy', file 'sales_log' on file 1."]
    assert catalog["copy"].state == "RESTORING"
    assert catalog["copy"].content_hash() == chain.h_full
    restore(catalog, chain.diff)
    assert catalog["copy"].content_hash() == chain.h_diff
    assert restore(catalog, chain.log1) == [
        "Processed 0 pages for database 'copy', file 'sales' on file 1.",
        "Processed 80 pages for database 'copy', file 'sales_log' on file 1."]  # since the full
    assert catalog["copy"].content_hash() == chain.h_log1
    restore(catalog, chain.log2, recovery=True)
    restored = catalog["copy"]
    assert restored.state == "ONLINE"
    assert restored.content_hash() == chain.h_log2 == db.content_hash()
    assert catalog["copy"].verify_pages() == []


def test_logs_alone_replay_from_the_full_backup(db: Database) -> None:
    chain = Chain(db)
    catalog: dict[str, Database] = {}
    restore(catalog, chain.full)
    restore(catalog, chain.log1)
    restore(catalog, chain.log2, recovery=True)
    assert catalog["copy"].content_hash() == chain.h_log2


def test_log_out_of_order(db: Database) -> None:
    chain = Chain(db)
    catalog: dict[str, Database] = {}
    restore(catalog, chain.full)
    restore(catalog, chain.diff)
    with pytest.raises(SqlError) as exc:
        restore(catalog, chain.log2)
    first, redo = chain.log2.info.first_lsn, chain.diff.info.checkpoint_lsn + 1
    assert exc.value.messages[0].text == (
        f"The log in this backup set begins at LSN {first}, which is too recent to apply to "
        f"the database. An earlier log backup that includes LSN {redo} can be restored.")
    restore(catalog, chain.log1)
    restore(catalog, chain.log2)
    with pytest.raises(SqlError) as exc:
        restore(catalog, chain.log1)
    assert sql_number(exc) == 4326
    assert f"terminates at LSN {chain.log1.info.last_lsn}," in exc.value.messages[0].text
    with pytest.raises(SqlError) as exc:
        restore(catalog, chain.diff)
    assert sql_number(exc) == 3120
    assert catalog["copy"].content_hash() == chain.h_log2


def test_diff_needs_its_base(db: Database) -> None:
    first_full = roundtrip(backup(db, "full"), 1)
    db.run_workload(5, seed=1)
    copy_only = roundtrip(backup(db, "full", copy_only=True), 1)
    backup(db, "full").commit()
    db.run_workload(5, seed=2)
    diff = roundtrip(backup(db, "diff"), 1)
    for base in (first_full, copy_only):
        catalog: dict[str, Database] = {}
        restore(catalog, base)
        with pytest.raises(SqlError) as exc:
            restore(catalog, diff)
        assert exc.value.numbers == [3136]


def test_diff_or_log_needs_a_restoring_database(db: Database) -> None:
    chain = Chain(db)
    catalog: dict[str, Database] = {}
    with pytest.raises(SqlError) as exc:
        restore(catalog, chain.log1)
    assert sql_number(exc) == 3118
    restore(catalog, chain.full, recovery=True)
    for later in (chain.diff, chain.log1):
        with pytest.raises(SqlError) as exc:
            restore(catalog, later)
        assert sql_number(exc) == 3117


def test_restore_over_online_database_with_unsaved_log_tail(db: Database) -> None:
    full = roundtrip(backup(db, "full"), 1)
    db.run_workload(4, seed=7)
    catalog = {"sales": db}
    with pytest.raises(SqlError) as exc:
        restore(catalog, full, name="sales")
    assert exc.value.numbers == [3159]
    assert catalog["sales"] is db
    log = roundtrip(backup(db, "log"), 1)  # back up the tail: now allowed
    restore(catalog, full, name="sales")
    restore(catalog, log, name="sales", recovery=True)
    assert catalog["sales"].content_hash() == db.content_hash()
    assert catalog["sales"].db_id == 5


def test_restore_with_replace_and_other_database(db: Database) -> None:
    other = Database.create("other", 8, seed=99, db_id=6)
    full = roundtrip(backup(db, "full"), 1)
    catalog = {"other": other}
    with pytest.raises(SqlError) as exc:
        restore(catalog, full, name="other")
    assert exc.value.messages[0].text == (
        "The backup set holds a backup of a database other than the existing 'other' database.")
    again = read_media(media(backup(db, "full", copy_only=True)))
    restore(catalog, again, name="other", replace=True, recovery=True)
    assert catalog["other"].content_hash() == db.content_hash()
    assert catalog["other"].db_id == 6 and catalog["other"].n_pages == 96
    with pytest.raises(ValueError):
        restore(catalog, again, name="third")  # the image was handed over already


def test_move_rules(db: Database) -> None:
    result = roundtrip(backup(db, "full"), 1)
    catalog: dict[str, Database] = {}
    with pytest.raises(SqlError) as exc:
        apply_restore(catalog, result, "copy", recovery=True, replace=False,
                      moves=(("nope", "/x.mdf"),))
    assert exc.value.messages[0].text == (
        "Logical file 'nope' is not part of database 'copy'. "
        "Use RESTORE FILELISTONLY to list the logical file names.")
    apply_restore(catalog, result, "copy", recovery=True, replace=False,
                  moves=(("sales", "/d/copy.mdf"), ("sales_log", "/d/copy_log.ldf")))
    assert (catalog["copy"].data_path, catalog["copy"].log_path) == (
        "/d/copy.mdf", "/d/copy_log.ldf")


def test_recover_database(db: Database) -> None:
    catalog: dict[str, Database] = {}
    restore(catalog, roundtrip(backup(db, "full"), 1))
    recover_database(catalog, "copy")
    assert catalog["copy"].state == "ONLINE"
    with pytest.raises(SqlError) as exc:
        recover_database(catalog, "copy")
    assert sql_number(exc) == 3153


# -- rowsets --------------------------------------------------------------------------------


def test_headeronly_rowset(db: Database) -> None:
    full = backup(db, "full", name="nightly")
    full.commit()
    db.run_workload(3, seed=1)
    diff, log = backup(db, "diff"), backup(db, "log", checksum=False)
    rowset = headeronly_rowset([full.info, diff.info, log.info])
    json.dumps(rowset.to_json())
    types = {c.name: c.sql_type for c in rowset.columns}
    assert types["BackupType"] == "smallint" and types["DeviceType"] == "tinyint"
    assert types["FirstLSN"] == "numeric(25,0)" and types["BackupSize"] == "numeric(20,0)"
    assert types["BackupSetGUID"] == "uniqueidentifier" and types["IsCopyOnly"] == "bit"
    rows = rowset.dicts()
    assert [r["BackupType"] for r in rows] == [1, 5, 2]
    assert [r["Position"] for r in rows] == [1, 2, 3]
    assert [r["BackupTypeDescription"] for r in rows] == [
        "Database", "Database Differential", "Transaction Log"]
    assert {r["DeviceType"] for r in rows} == {7}
    assert rows[0]["BackupName"] == "nightly" and rows[0]["DatabaseName"] == "sales"
    assert rows[1]["DifferentialBaseLSN"] == rows[0]["CheckpointLSN"] == CREATE_LSN
    assert rows[1]["DifferentialBaseGUID"] == rows[0]["BackupSetGUID"]
    assert rows[2]["FirstLSN"] == CREATE_LSN + 1 and rows[2]["LastLSN"] == CREATE_LSN + 4
    assert [r["HasBackupChecksums"] for r in rows] == [True, True, False]
    assert [r["Flags"] for r in rows] == [16, 16, 0]
    assert rows[0]["SoftwareVendorId"] == 4608 and rows[0]["RecoveryModel"] == "FULL"
    assert rows[0]["BackupSetGUID"] == str(full.info.backup_set_guid).upper()


def test_filelistonly_and_labelonly_rowsets(db: Database) -> None:
    prepared = backup(db, "full", compression=True)
    rows = filelistonly_rowset(prepared.info).dicts()
    assert [(r["LogicalName"], r["Type"], r["FileID"]) for r in rows] == [
        ("sales", "D", 1), ("sales_log", "L", 2)]
    assert rows[0]["PhysicalName"] == "/var/opt/mssql/data/sales.mdf"
    assert rows[0]["Size"] == 96 * PAGE_SIZE and rows[0]["FileGroupName"] == "PRIMARY"
    layout = FamilyLayout.for_backup(prepared, 2, 65536, 512)
    label = labelonly_rowset(layout.header(1))
    json.dumps(label.to_json())
    row = label.dicts()[0]
    assert (row["FamilyCount"], row["FamilySequenceNumber"], row["IsCompressed"]) == (2, 2, True)
    assert row["SoftwareName"] == "Microsoft SQL Server" and row["SoftwareVendorId"] == 4608


# -- documentation --------------------------------------------------------------------------


def test_docs_show_the_layouts_the_code_uses() -> None:
    text = DOCS.read_text()
    for layout in LAYOUTS:
        assert layout.markdown() in text, f"docs/media.md is out of date for {layout.title}"


def test_families_fed_from_concurrent_threads(db: Database) -> None:
    import threading

    db.run_workload(20, seed=4)
    prepared = backup(db, "full", compression=True)
    data = media(prepared, 4, seed=8)
    assembler = RestoreAssembler(4)
    errors: list[BaseException] = []

    def run(slot: int) -> None:
        try:
            feed(assembler, slot, data[slot], seed=slot)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and assembler.complete
    catalog: dict[str, Database] = {}
    apply_restore(catalog, assembler.finish(), "copy", recovery=True, replace=False)
    assert catalog["copy"].content_hash() == db.content_hash()
