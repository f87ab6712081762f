"""Golden bytes of the TDS codec (vdisim/engine/tds): every token and type encoder, and the
PRELOGIN / LOGIN7 / SQLBatch / RPC / transaction-manager decoders.

Expected bytes are written out by hand from MS-TDS (§2.2.3 packets, §2.2.5 types, §2.2.6
requests, §2.2.7 tokens, §4 examples), never produced by the code under test.
"""

from __future__ import annotations

import struct
import uuid
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from vdisim.engine.results import Column, Rowset
from vdisim.engine.sqlerrors import SqlMessage
from vdisim.engine.tds import login, packets, prelogin, requests, tokens, types
from vdisim.engine.tds.types import Reader, column_type


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


def u16(text: str) -> str:
    return text.encode("utf-16-le").hex()


COLL = "0904d00034"  # SQL_Latin1_General_CP1_CI_AS

# --------------------------------------------------------------------------- packets


def test_packet_split_and_eom() -> None:
    pkts = packets.packets(packets.REPLY, b"0123456789", packet_size=16, spid=0x33)
    assert pkts == [h("04 00 0010 0033 01 00") + b"01234567",
                    h("04 01 000a 0033 02 00") + b"89"]
    assert packets.pack_message(packets.REPLY, b"") == h("04 01 0008 0000 01 00")
    partial = packets.packets(packets.REPLY, b"ab", final=False, first_id=255)
    assert partial == [h("04 00 000a 0000 ff 00") + b"ab"]


def test_message_reader_reassembles_and_keeps_attention_apart() -> None:
    r = packets.MessageReader()
    data = (h("01 00 000c 0000 01 00") + b"abcd" + h("06 01 0008 0000 01 00")
            + h("01 01 000a 0000 02 00") + b"ef")
    for i in range(0, len(data), 3):  # any split
        r.feed(data[i:i + 3])
    assert r.next_message() == (packets.ATTENTION, 1, b"")
    assert r.next_message() == (packets.SQL_BATCH, 1, b"abcdef")
    assert r.next_message() is None


@given(st.binary(max_size=3000), st.integers(min_value=9, max_value=600))
@settings(max_examples=50, deadline=None)
def test_packets_round_trip(payload: bytes, size: int) -> None:
    r = packets.MessageReader()
    r.feed(packets.pack_message(packets.RPC, payload, packet_size=size))
    assert r.next_message() == (packets.RPC, packets.EOM, payload)


# --------------------------------------------------------------------------- PRELOGIN


def test_prelogin_request_decodes() -> None:
    # The layout of MS-TDS §4.1's pre-login request: VERSION 9.0.0.0, ENCRYPTION, INSTOPT,
    # THREADID 0x00000DB8, MARS; option table of 5 entries + terminator = 26 bytes.
    payload = h("00 001a 0006 01 0020 0001 02 0021 0001 03 0022 0004 04 0026 0001 ff"
                "09 00 0000 0000  00  00  b80d0000  01")
    p = prelogin.parse(payload)
    assert p.get(prelogin.VERSION) == h("090000000000")
    assert p.encryption == prelogin.ENCRYPT_OFF
    assert p.get(prelogin.THREADID) == h("b80d0000")
    assert p.get(prelogin.MARS) == b"\x01"


def test_prelogin_server_reply() -> None:
    reply = prelogin.server_reply(prelogin.ENCRYPT_NOT_SUP).pack()
    assert reply == h("00 001a 0006 01 0020 0001 02 0021 0001 03 0022 0000 04 0022 0001 ff"
                      "10 00 03e8 0000  02  00  00")


def test_encryption_negotiation() -> None:
    n = prelogin.negotiate
    assert n(prelogin.ENCRYPT_ON, tls_available=False) == prelogin.ENCRYPT_NOT_SUP
    assert n(prelogin.ENCRYPT_OFF, tls_available=False) == prelogin.ENCRYPT_NOT_SUP
    assert n(prelogin.ENCRYPT_OFF, tls_available=True) == prelogin.ENCRYPT_OFF
    assert n(prelogin.ENCRYPT_ON, tls_available=True) == prelogin.ENCRYPT_ON
    assert n(prelogin.ENCRYPT_REQ, tls_available=True) == prelogin.ENCRYPT_ON
    assert n(prelogin.ENCRYPT_NOT_SUP, tls_available=True) == prelogin.ENCRYPT_NOT_SUP


# --------------------------------------------------------------------------- LOGIN7


def test_password_obfuscation() -> None:
    # 'x' = 78 00: nibbles swapped 87 00, XOR A5 -> 22 A5 (MS-TDS §2.2.6.4 Password).
    assert login.encode_password("x") == h("22 a5")
    assert login.decode_password(h("22 a5")) == "x"


def test_login7_tds71_layout_decodes() -> None:
    """A TDS 7.1 LOGIN7 as jTDS sends it (no PRELOGIN first): 86-byte header, no
    ChangePassword / cbSSPILong."""
    fields = ["h", "sa", None, "jTDS", "", "", "", "", "db"]
    raw = [u16(f) if f is not None else "22a5" for f in fields]  # password 'x'
    offset = 86
    pairs = ""
    data = ""
    for r in raw:
        pairs += struct.pack("<HH", offset + len(data) // 2, len(r) // 4).hex()
        data += r
    end = offset + len(data) // 2
    tail = "000000000000" + struct.pack("<HH", end, 0).hex() * 2
    fixed = (struct.pack("<I", end).hex() + "01000071" + "00000000" + "07000000"
             + "d2040000" + "00000000" + "e0 03 00 00" + "00000000" + "09040000")
    payload = h(fixed + pairs + tail + data)
    got = login.parse(payload)
    assert got.tds_version == 0x71000001 and got.packet_size == 0
    assert (got.hostname, got.username, got.password, got.appname, got.database) == (
        "h", "sa", "x", "jTDS", "db")
    assert not got.integrated_security
    assert login.agreed_version(got.tds_version) == 0x71000001


def test_login7_tds74_round_trip_and_versions() -> None:
    got = login.parse(login.build(username="backup", password="p@ss", database="sales"))
    assert (got.username, got.password, got.database, got.tds_version) == (
        "backup", "p@ss", "sales", 0x74000004)
    assert login.agreed_version(0x08000000) == 0x74000004  # TDS 8 strict login
    assert login.agreed_version(0x75000000) == 0x74000004
    assert login.negotiated_packet_size(0) == 4096
    assert login.negotiated_packet_size(100000) == 32767


# --------------------------------------------------------------------------- tokens

VDISIM = "06" + u16("VDISIM")


def test_info_token_74_and_71() -> None:
    msg = SqlMessage(5701, 0, 2, "x")
    assert tokens.message(msg) == h("ab 1c00 45160000 02 00 0100" + u16("x") + VDISIM
                                    + "00 01000000")
    assert tokens.message(msg, version=tokens.TDS71) == h(
        "ab 1a00 45160000 02 00 0100" + u16("x") + VDISIM + "00 0100")


def test_error_token() -> None:
    msg = SqlMessage(18456, 14, 1, "no")
    assert tokens.message(msg) == h("aa 1e00 18480000 01 0e 0200" + u16("no") + VDISIM
                                    + "00 01000000")


def test_done_tokens() -> None:
    assert tokens.done(tokens.DONE_COUNT | tokens.DONE_MORE, tokens.CURCMD_SELECT, 2) == h(
        "fd 1100 c100 0200000000000000")
    assert tokens.done(tokens.DONE_COUNT, 0xC1, 2, version=tokens.TDS71) == h(
        "fd 1000 c100 02000000")
    assert tokens.done(tokens.DONE_ATTN) == h("fd 2000 0000 0000000000000000")
    assert tokens.done(tokens.DONE_ERROR, token=tokens.DONEPROC) == h(
        "fe 0200 0000 0000000000000000")
    assert tokens.done(tokens.DONE_MORE, token=tokens.DONEINPROC) == h(
        "ff 0100 0000 0000000000000000")


def test_loginack() -> None:
    assert tokens.loginack(0x74000004) == h("ad 3200 01 74000004 14" + u16("Microsoft SQL Server")
                                            + "10 00 03 e8")
    assert tokens.loginack(0x71000001)[4:8] == h("71000001")  # big-endian on the wire


def test_envchange_tokens() -> None:
    assert tokens.envchange_text(tokens.ENV_DATABASE, "sales", "master") == h(
        "e3 1900 01 05" + u16("sales") + "06" + u16("master"))
    assert tokens.envchange_text(tokens.ENV_PACKETSIZE, "4096", "4096") == h(
        "e3 1300 04 04" + u16("4096") + "04" + u16("4096"))
    assert tokens.envchange_bytes(tokens.ENV_COLLATION, h(COLL), b"") == h(
        "e3 0800 07 05" + COLL + "00")
    assert tokens.envchange_bytes(tokens.ENV_BEGIN_TRAN, h("0100000000000000"), b"") == h(
        "e3 0b00 08 08 0100000000000000 00")
    assert tokens.envchange_bytes(tokens.ENV_COMMIT_TRAN, b"", h("0100000000000000")) == h(
        "e3 0b00 09 00 08 0100000000000000")


def test_returnstatus_and_returnvalue() -> None:
    assert tokens.return_status(0) == h("79 00000000")
    assert tokens.return_value(0, "@handle", "int", 1) == h(
        "ac 0000 07" + u16("@handle") + "01 00000000 0100 2604 04 01000000")
    assert tokens.return_value(0, "@h", "int", 7, version=tokens.TDS71) == h(
        "ac 0000 02" + u16("@h") + "01 0000 0100 2604 04 07000000")


def test_colmetadata_and_row() -> None:
    rs = Rowset((Column("one", "int"), Column("name", "nvarchar(128)")), ((1, "ab"),
                                                                         (None, None)))
    assert tokens.rowset(rs) == h(
        "81 0200"
        "00000000 0100 2604 03" + u16("one")
        + "00000000 0100 e7 0001" + COLL + "04" + u16("name")
        + "d1 04 01000000 0400" + u16("ab")
        + "d1 00 ffff")
    assert tokens.rowset(rs, version=tokens.TDS71)[:12] == h(
        "81 0200 0000 0100 2604 03") + "o".encode("utf-16-le")


# --------------------------------------------------------------------------- types


def enc(sql_type: str, value: object) -> bytes:
    return column_type(sql_type).encode(value)


def test_integer_types() -> None:
    assert column_type("tinyint").type_info == h("26 01")
    assert enc("tinyint", 255) == h("01 ff")
    assert column_type("smallint").type_info == h("26 02")
    assert enc("smallint", -2) == h("02 feff")
    assert enc("int", None) == h("00")
    assert column_type("bigint").type_info == h("26 08")
    assert enc("bigint", 2**40) == h("08 0000000000010000")


def test_bit() -> None:
    assert column_type("bit").type_info == h("68 01")
    assert (enc("bit", True), enc("bit", False), enc("bit", None)) == (
        h("01 01"), h("01 00"), h("00"))


def test_numeric() -> None:
    assert column_type("numeric(20,0)").type_info == h("6c 0d 14 00")
    assert enc("numeric(20,0)", 1000) == h("0d 01 e8030000 0000000000000000")
    assert column_type("numeric(25,0)").type_info == h("6c 0d 19 00")
    assert column_type("numeric(38,10)").type_info == h("6c 11 26 0a")
    assert enc("numeric(5,2)", Decimal("-5")) == h("05 00 f4010000")
    assert enc("numeric(25,0)", None) == h("00")


def test_guid() -> None:
    assert column_type("uniqueidentifier").type_info == h("24 10")
    assert enc("uniqueidentifier", "00112233-4455-6677-8899-AABBCCDDEEFF") == h(
        "10 33221100 5544 7766 8899aabbccddeeff")
    assert enc("uniqueidentifier", None) == h("00")


def test_datetime() -> None:
    assert column_type("datetime").type_info == h("6f 08")
    assert enc("datetime", "1900-01-02T00:00:01") == h("08 01000000 2c010000")
    assert enc("datetime", "1899-12-31 00:00:00") == h("08 ffffffff 00000000")
    assert enc("datetime", None) == h("00")


def test_nvarchar_and_varbinary() -> None:
    assert column_type("nvarchar(1)").type_info == h("e7 0200" + COLL)
    assert column_type("varchar(8000)").type_info == h("e7 401f" + COLL)
    assert enc("nvarchar(60)", "é") == h("0200 e900")
    assert column_type("varbinary(20)").type_info == h("a5 1400")
    assert enc("varbinary(20)", b"\x01\x02") == h("0200 0102")
    assert enc("varbinary(20)", None) == h("ffff")


def test_sql_variant() -> None:
    assert column_type("sql_variant").type_info == h("62 501f0000")
    assert enc("sql_variant", 3) == h("06000000 38 00 03000000")
    assert enc("sql_variant", "RTM") == h("0f000000 e7 07" + COLL + "401f" + u16("RTM"))
    assert enc("sql_variant", None) == h("00000000")


# --------------------------------------------------------------------------- requests

ALL_HEADERS = "16000000 12000000 0200 0000000000000000 01000000"


def test_sql_batch_with_and_without_all_headers() -> None:
    assert requests.sql_batch(h(ALL_HEADERS + u16("SELECT 1")), 0x74000004) == "SELECT 1"
    assert requests.sql_batch(h(u16("SELECT 1")), 0x71000001) == "SELECT 1"


def test_rpc_sp_executesql_by_proc_id() -> None:
    payload = h(ALL_HEADERS + "ffff 0a00 0000"
                "00 00 e7 4000" + COLL + "1000" + u16("SELECT 1")
                + "03" + u16("@db") + "00 e7 4000" + COLL + "0a00" + u16("sales"))
    (call,) = requests.rpc(payload, 0x74000004)
    assert call.proc == "sp_executesql"
    assert [(p.name, p.value, p.output) for p in call.params] == [
        ("", "SELECT 1", False), ("@db", "sales", False)]


def test_rpc_by_name_with_output_int_and_plp() -> None:
    payload = h("0a00" + u16("sp_prepare") + "0000"
                + "02" + u16("@h") + "01 2604 00"                       # int OUTPUT, NULL
                + "00 00 e7 ffff" + COLL + "0800000000000000 08000000" + u16("a=1;")[:16]
                + "00000000"                                            # nvarchar(max)
                + "00 00 2604 04 01000000")                              # int 1
    (call,) = requests.rpc(payload, 0x71000001)  # TDS 7.1: no ALL_HEADERS
    assert call.proc == "sp_prepare"
    assert [(p.name, p.output, p.value) for p in call.params] == [
        ("@h", True, None), ("", False, "a=1;"), ("", False, 1)]


def test_rpc_numeric_guid_and_batches() -> None:
    one = ("ffff 0c00 0000" + "00 00 6c 11 26 02 11 00 2c01" + "00" * 14
           + "00 00 24 10 10 33221100 5544 7766 8899aabbccddeeff")
    calls = requests.rpc(h(ALL_HEADERS + one + "ff" + "ffff 0f00 0000"), 0x74000004)
    assert [c.proc for c in calls] == ["sp_execute", "sp_unprepare"]
    assert [p.value for p in calls[0].params] == [
        Decimal("-3.00"), "00112233-4455-6677-8899-AABBCCDDEEFF"]


def test_transaction_manager_requests() -> None:
    begin = requests.transaction_manager(h(ALL_HEADERS + "0500 00 00"), 0x74000004)
    assert (begin.kind, begin.name) == (requests.TM_BEGIN_XACT, "")
    commit = requests.transaction_manager(h(ALL_HEADERS + "0700 00 01"), 0x74000004)
    assert (commit.kind, commit.begin_after) == (requests.TM_COMMIT_XACT, True)
    rollback = requests.transaction_manager(h(ALL_HEADERS + "0800 01" + u16("t") + "00"),
                                            0x74000004)
    assert (rollback.kind, rollback.name, rollback.begin_after) == (
        requests.TM_ROLLBACK_XACT, "t", False)


@given(st.text(max_size=200), st.integers(min_value=-(2**63), max_value=2**63 - 1),
       st.uuids())
@settings(max_examples=50, deadline=None)
def test_value_encoders_decode_back(text: str, n: int, u: uuid.UUID) -> None:
    """A value written by the ROW encoder reads back with the RPC parameter decoder."""
    cases = [("nvarchar(4000)", text), ("bigint", n), ("uniqueidentifier", str(u).upper()),
             ("numeric(38,0)", n), ("bit", n % 2 == 1)]
    for sql_type, value in cases:
        wt = column_type(sql_type)
        r = Reader(wt.type_info + wt.encode(value))
        assert types.read_value(r, types.read_type_info(r)) == value
        assert r.at_end


@given(st.binary(max_size=300), st.sampled_from([0x71000001, 0x74000004]))
@settings(max_examples=300, deadline=None)
def test_decoders_reject_garbage_with_their_own_errors(data: bytes, version: int) -> None:
    """Whatever a client sends, a decoder answers or raises its declared error (the endpoint
    turns it into error 8009 or closes the connection), never anything else."""
    for decode, errors in [
        (lambda: requests.rpc(data, version), (requests.RequestError,)),
        (lambda: requests.transaction_manager(data, version), (requests.RequestError,)),
        (lambda: requests.sql_batch(data, version), (requests.RequestError,)),
        (lambda: login.parse(data), (login.LoginError,)),
        (lambda: prelogin.parse(data), (prelogin.PreloginError,)),
    ]:
        try:
            decode()
        except errors:
            pass
