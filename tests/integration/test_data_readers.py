"""The data stage's readers beyond jsonl, with cluster=local: parquet in, and WARC in through
trafilatura extraction; parquet out. Input files are written with the stage environment's own
pyarrow and warcio, offline."""
from __future__ import annotations

import gzip
import json
import subprocess

import pytest

from jobs import layout

pytestmark = pytest.mark.slow
ONLY_CLEAN = [f"~pipeline.stages.{s}" for s in ("dedup", "tokenizer", "tokenize", "merge")]
PROSE = ("The library opens every morning at nine. Readers find novels, newspapers and scientific journals there. "
         "The staff gladly help students who prepare for their exams. During the holidays, reading workshops are "
         "organised for the children of the neighbourhood. Every year the town spends part of its budget on new "
         "books. The inhabitants value this calm and bright place very much.")

MAKE_INPUTS = """
import io, sys, pyarrow as pa, pyarrow.parquet as pq
from warcio.warcwriter import WARCWriter
from warcio.statusandheaders import StatusAndHeaders
prose, out = sys.argv[1], sys.argv[2]
pq.write_table(pa.table({"id": [f"p{i}" for i in range(6)], "text": [prose] * 6}), f"{out}/parquet/docs.parquet")
with open(f"{out}/warc/crawl.warc.gz", "wb") as f:
    w = WARCWriter(f, gzip=True)
    for i in range(5):
        html = f"<html><head><title>Page {i}</title></head><body><nav>Home | About</nav><article><p>{prose}</p>"
        html += f"<p>This is page number {i} of the test crawl, written for the reader test.</p></article></body></html>"
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
        w.write_record(w.create_warc_record(f"https://example.org/{i}", "response",
                                            payload=io.BytesIO(html.encode()), http_headers=headers))
"""


@pytest.fixture
def inputs(tmp_path, cpu_python):
    for d in ("parquet", "warc"):
        (tmp_path / d).mkdir()
    p = subprocess.run([str(cpu_python), "-c", MAKE_INPUTS, PROSE, str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return tmp_path


def clean_output(cli):
    run_dir = cli.run_dir()
    h = next(s["hash"] for s in json.loads((run_dir / "plan.json").read_text())["stages"] if s["name"] == "clean")
    return layout.datatrove_dir(run_dir, "clean", h, 0, "output")


def test_parquet_in_parquet_out(cli, inputs):
    cli("run", "pipeline=data", "cluster=local", "data=raw", "data.tasks=1", "wait=true", "poll_s=0.5", *ONLY_CLEAN,
        "data.reader._target_=datatrove.pipeline.readers.ParquetReader", f"data.source={inputs / 'parquet'}",
        "data.reader.glob_pattern=*.parquet",
        "pipeline.stages.clean.blocks.3._target_=datatrove.pipeline.writers.ParquetWriter", timeout=600)
    assert [p.suffix for p in clean_output(cli).iterdir()] == [".parquet"]
    summary = json.loads(cli("summary", "latest", "--json").stdout)["clean"]["0"]["blocks"]
    assert summary[0]["out"] == 6 and summary[-1]["out"] == 6  # read 6, wrote 6


def test_warc_through_trafilatura_and_the_filters(cli, inputs):
    cli("run", "pipeline=data", "cluster=local", "data=fineweb_like", "data.tasks=1", "wait=true", "poll_s=0.5",
        *ONLY_CLEAN, "data.reader={_target_: datatrove.pipeline.readers.WarcReader, data_folder: "
        f"{inputs / 'warc'}, glob_pattern: '*.warc.gz'}}",
        "+data.extract.trafilatura={_target_: datatrove.pipeline.extractors.Trafilatura, favour_precision: true}",
        timeout=600)
    summary = json.loads(cli("summary", "latest", "--json").stdout)["clean"]["0"]["blocks"]
    assert summary[0]["out"] == 5  # five WARC responses read
    kept = summary[-1]["out"]
    docs = [json.loads(x) for x in gzip.open(clean_output(cli) / "00000.jsonl.gz", "rt")]
    assert len(docs) == kept >= 1
    assert all("Home | About" not in d["text"] and "The library opens every morning" in d["text"] for d in docs)
