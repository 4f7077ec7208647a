"""Runs in the cpu stage environment (the launcher's venv has no wandb): reads a W&B offline run's record log
(run-<id>.wandb) with wandb's own protobuf Record, and prints {"run": names, "config": {...}, "history":
[{key: value}...]} as JSON. wandb >= 0.2x has no Python reader of the log any more (its Go core writes it);
the framing is LevelDB's log format (32 KiB blocks, 7-byte record headers) after wandb's 7-byte header.

  python wandb_records.py RUN.wandb
"""
import json
import struct
import sys

from wandb.proto import wandb_internal_pb2 as pb

BLOCK, HEAD = 32768, 7  # LevelDB log: block size; record header (crc32 uint32, length uint16, type uint8)
FULL, FIRST, LAST = 1, 2, 4


def records(path):
    """Every Record of the log, in order (a record spread over blocks is joined: FIRST, MIDDLE..., LAST)."""
    data = open(path, "rb").read()
    assert data[:4] == b":W&B", data[:7]
    pos, buf = HEAD, b""
    while pos + HEAD <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEAD:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEAD])
        chunk = data[pos + HEAD:pos + HEAD + length]
        pos += HEAD + length
        if kind == 0 and length == 0:
            break
        buf = chunk if kind in (FULL, FIRST) else buf + chunk
        if kind in (FULL, LAST):
            r = pb.Record()
            r.ParseFromString(buf)
            yield r


out = {"history": [], "config": {}, "run": {}}
for r in records(sys.argv[1]):
    t = r.WhichOneof("record_type")
    if t == "history":
        out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
    elif t == "config":
        out["config"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.config.update})
    elif t == "run":
        out["run"] = {"name": r.run.display_name, "project": r.run.project, "group": r.run.run_group,
                      "tags": list(r.run.tags), "job_type": r.run.job_type}
        out["config"].update({i.key: json.loads(i.value_json) for i in r.run.config.update})
print(json.dumps(out, default=str))
