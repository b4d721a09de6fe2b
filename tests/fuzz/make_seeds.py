#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (committed in corpus/).

corpus/request: socket lines, valid and invalid, of every op.
corpus/record:  LMDB job records (format version 1, queue/queue_int.h),
                valid ones and a few near misses.
corpus/answer:  bodies of 2xx answers of the v2 API: the success answer,
                its variants and near misses (the scanner's odd cases).
Run again after a format change: python3 tests/fuzz/make_seeds.py
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(sub, name, data):
    d = os.path.join(HERE, "corpus", sub)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def requests():
    msg = {"phoneNumberId": "1000001", "to": "+15551234567", "text": "Hi"}
    lines = [
        {"op": "send", "id": 1, "type": "text", "message": msg},
        {"op": "send", "id": "a", "type": "media",
         "message": {"phoneNumberId": "1", "to": "2", "media": {"type": "image", "mediaId": "m1"}}},
        {"op": "send", "type": "location", "message": {"phoneNumberId": "1", "to": "2",
                                                       "latitude": 1.5, "longitude": 2}},
        {"op": "send", "type": "interactive", "message": {"phoneNumberId": "1", "to": "2",
                                                          "interactive": {"type": "button"}}},
        {"op": "send", "type": "smart", "message": {"phoneNumberId": "1", "to": "2"}},
        {"op": "template_send", "id": 2.5,
         "message": {"phoneNumberId": "1000001", "to": "15551234567", "templateName": "promo",
                     "language": "en_US", "components": [{"type": "body", "parameters": [
                         {"type": "text", "text": "x"}]}]}},
        {"op": "send", "type": "text", "message": msg, "idempotencyKey": "k1", "campaign": "c",
         "orderKey": "o", "priority": "high", "notBefore": 1700000000, "expiresAt": 1800000000.5,
         "maxAttempts": 3},
        {"op": "send", "type": "text", "message": msg, "priority": "bulk", "maxAttempts": 1001},
        {"op": "get", "job": "17"},
        {"op": "get", "idempotencyKey": "k1"},
        {"op": "list", "campaign": "c", "state": "failed", "after": "5", "limit": 1000},
        {"op": "campaign", "campaign": "c"},
        {"op": "cancel", "job": "3"},
        {"op": "cancel", "campaign": "c"},
        {"op": "pause", "all": True},
        {"op": "resume", "phoneNumberId": "1000001"},
        {"op": "retry", "campaign": "c", "state": "uncertain"},
        {"op": "stats"},
        {"op": "watch", "campaign": "c"},
        {"op": "ping", "id": None},
        {"op": "frobnicate"},
        {"id": 7},
    ]
    for i, l in enumerate(lines):
        write("request", "line-%02d.json" % i, json.dumps(l).encode())
    raw = [b"not json", b"[1,2,3]", b"{}", b'{"op":"ping"}\r', b"{" * 70 + b"}" * 70,
           b'{"op":"send","type":"text","message":{"phoneNumberId":"1","to":"x","text":"\\u0000"}}',
           b'{"op":"ping","id":1e999}', b'{"op":"ping","id":"\xff\xfe"}']
    for i, r in enumerate(raw):
        write("request", "raw-%02d.json" % i, r)


def record(state=4, typ=1, prio=1, attempts=1, max_attempts=0, times=(1.7e9,) * 5,
           status=0, meta=0, strs=("1000001", "+15551234567", None, None, None, None, None, None),
           version=1):
    out = struct.pack(">BBBBHH5diq", version, state, typ, prio, attempts, max_attempts, *times,
                      status, meta)
    for s in strs:
        if s is None:
            out += struct.pack(">H", 0xFFFF)
        else:
            b = s.encode()
            out += struct.pack(">H", len(b)) + b
    return out


def records():
    write("record", "queued", record(state=1, attempts=0))
    write("record", "sent", record(strs=("1", "2", "camp", "ok", "idem", "wamid.HBgL", None, None)))
    write("record", "failed", record(state=5, status=400, meta=131026,
                                     strs=("1", "2", None, None, None, None, "VALIDATION_ERROR",
                                           "bad request")))
    write("record", "template", record(typ=6, prio=2, state=3, attempts=9, max_attempts=10))
    write("record", "empty-strings", record(strs=("", "", "", "", "", "", "", "")))
    write("record", "long", record(strs=("9" * 64, "8" * 64, "c" * 200, "o" * 200, "k" * 200,
                                         "w" * 256, "E" * 63, "m" * 255)))
    write("record", "nan", record(times=(float("nan"), -0.0, float("inf"), 0.0, 1e308)))
    write("record", "bad-version", record(version=2))
    write("record", "truncated", record()[:-3])
    write("record", "trailing", record() + b"x")


def answers():
    ok = ('{"success":true,"data":{"messaging_product":"whatsapp","contacts":[{"input":'
          '"15551234567","wa_id":"15551234567"}],"messages":[{"id":'
          '"wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI5QUNFNjM3RDc2QjJFRTZGMjkA",'
          '"message_status":"accepted"}]}}')
    bodies = [
        ok,
        json.dumps(json.loads(ok), indent=2),
        '{"data":{"messages":[{"id":"w1"},{"id":"w2"}]}}',
        '{"data":{"x":[1,-2.5e3,true,false,null,{"id":"no"}],"messages":[{"a":{"id":"no"},"id":"w3"}]}}',
        '{"data":{"messages":[{"id":"w4","id":"dup"}]},"data":{}}',
        '{"data":{"messages":[{"id":"w\\u0041\\"q"}]}}',
        '{"data":{"messages":[{"id":"w5"}]}} trailing',
        '{"data":{"messages":[{"id":"w6"}]}',
        '{"data":{"messages":[{"id":"w7"}],}}',
        '{"data":{"messages":[{"id":5}]}}',
        '{"data":{"messages":[{"id":"\u00e9\u20ac"}]}}',
        '{"data":{"n":[0,-0,1.5,1e10,-1E-2,01,1.,.5,+1,1-2]},"data":{"messages":[{"id":"w8"}]}}',
        '[' * 70 + ']' * 70,
        '',
        'null',
    ]
    for i, b in enumerate(bodies):
        write("answer", "a%02d" % i, b.encode())


if __name__ == "__main__":
    requests()
    records()
    answers()
