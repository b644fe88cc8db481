#!/usr/bin/env python3
"""Writes the hand-written seed inputs of each fuzz target into seeds/<target>/ (run from fuzz/).

Every input starts with one selector byte (see each target: which configuration, which message), then the text or
the protobuf body. The bodies are encoded here by hand so that the seeds need nothing but Python.
"""
import os
import struct


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def s(field, text):
    data = text.encode()
    return varint(field << 3 | 2) + varint(len(data)) + data


def i(field, value):
    return varint(field << 3) + varint(value)


def msg(field, body):
    return varint(field << 3 | 2) + varint(len(body)) + body


def write(target, name, data):
    os.makedirs(f"seeds/{target}", exist_ok=True)
    with open(f"seeds/{target}/{name}", "wb") as f:
        f.write(data)


# phone_number: selector % 4 picks KR | KR,JP | JP,KR,US | KR,CN,VN,GB.
for name, sel, text in [
    ("kr-national", 0, "010-1234-5678"),
    ("kr-compact", 0, "01012345678"),
    ("kr-international", 1, "+82 10 1234 5678"),
    ("kr-dots-parens", 0, " (010) 1234.5678 "),
    ("kr-landline", 0, "02-312-3456"),
    ("jp-mobile", 1, "+81 90-1234-5678"),
    ("jp-national-default-jp", 2, "090-1234-5678"),
    ("us-number", 2, "+1 202 555 0100"),
    ("gb-mobile", 3, "+44 7400 123456"),
    ("vn-mobile", 3, "+84 91 234 56 78"),
    ("too-long", 0, "1" * 40),
]:
    write("phone_number", name, bytes([sel]) + text.encode())

# otp_code: selector % 3 picks 6, 7 or 8 digits.
for name, sel, text in [
    ("six", 0, "123456"),
    ("seven-padded", 1, " 1234567 "),
    ("eight", 2, "01234567"),
    ("arabic-indic", 0, "١٢٣٤٥٦"),
    ("app-hash", 0, "FA+9qCX9VSu"),
]:
    write("otp_code", name, bytes([sel]) + text.encode())

# otp_requests: bit 0 SendCode (0) / VerifyCode (1); (sel >> 1) % 3 the code length; (sel >> 3) % 4 the countries.
write("otp_requests", "send", b"\x00" + s(1, "010-1234-5678") + i(2, 1))
write("otp_requests", "send-all-fields", b"\x00" + s(1, "+82 10 1234 5678") + i(2, 4) + s(3, "01012345678")
      + s(4, "FA+9qCX9VSu"))
write("otp_requests", "send-bad-everything", b"\x08" + s(1, "02-312-3456") + i(2, 99) + s(3, "x") + s(4, "short"))
write("otp_requests", "verify", b"\x01" + s(1, "01012345678") + i(2, 2) + s(3, "123456"))
write("otp_requests", "verify-eight", b"\x05" + s(1, "+81 90-1234-5678") + i(2, 3) + s(3, "12345678"))
write("otp_requests", "verify-negative-purpose", b"\x01" + s(1, "010-1234-5678") + i(2, -1) + s(3, "12a456"))

# supervisor_requests: sel % 4 LookupCode / GetPhoneStatus / UnlockPhone / ListAuditEvents; (sel >> 2) % 4 countries.
write("supervisor_requests", "lookup", b"\x00" + s(1, "010-1234-5678") + i(2, 1) + s(3, "CS-2026-0001") + i(4, 1)
      + i(5, 1) + s(6, "010-1234-5678"))
write("supervisor_requests", "lookup-callback-any-purpose", b"\x00" + s(1, "01012345678") + s(3, "T#1") + i(4, 1)
      + i(5, 2) + s(6, "+82 2 312 3456"))
write("supervisor_requests", "status", b"\x01" + s(1, "010-1234-5678") + s(2, "CS-2026-0001"))
write("supervisor_requests", "unlock", b"\x02" + s(1, "010-1234-5678") + s(2, "CS-1") + s(3, "driver verified by callback"))
write("supervisor_requests", "unlock-control-char", b"\x02" + s(1, "010-1234-5678") + s(2, "CS-1") + s(3, "a\x07b"))
timestamp = lambda seconds, nanos: i(1, seconds) + i(2, nanos)
write("supervisor_requests", "list", b"\x03" + msg(1, timestamp(1_800_000_000, 0)) + msg(2, timestamp(1_900_000_000, 5))
      + s(3, "kim") + s(4, "010-1234-5678") + i(5, 1) + i(6, 50) + s(7, "djE6NDI"))
write("supervisor_requests", "list-out-of-range", b"\x03" + msg(1, timestamp(-1, -1)) + i(6, 501) + s(7, "!!"))

# audit_chain: a structured input (`arbitrary`), so any bytes are an input; these are a few lengths and patterns
# to start from rather than the empty input.
write("audit_chain", "counting", bytes(range(256)))
write("audit_chain", "words", b"kim supervisor lookup_code +82 10-****-5678 CS-1 strong_complaint " * 8)
write("audit_chain", "sparse", struct.pack("<16Q", *[(k * 0x9E3779B97F4A7C15) % (1 << 64) for k in range(16)]))
