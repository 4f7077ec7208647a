"""Generated tokens/s of llama.cpp's server (serve.engine=llama.cpp, CPU build) with and without
speculative decoding on the same prompts and GGUF: serve.speculative.method=ngram is llama_cpp.server's
prompt-lookup decoding (draft_model=prompt-lookup-decoding; the only method its 0.3.36 server runs).
Both servers are started with the launcher's own command line (jobs/adapters/llamacpp.py), in turn
for --rounds rounds (the median is shown: one run of a few seconds moves by +-10 % on a shared
machine), greedy, one request at a time. The model is the random tiny GGUF of the tests, so what the
lookup finds depends on its noise: the number says what the machinery costs or gains here, not what a
trained model would see.

    .venv/bin/python benchmarks/bench_speculative.py [--requests 96] [--max-tokens 128] [--tokens 4] [--rounds 3]
"""
import argparse
import tempfile
from pathlib import Path

from common import save, show
from llamacpp_common import gguf, measure, start_by_hand, stop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=4, help="serve.speculative.num_speculative_tokens")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    runs: dict = {"off": [], "ngram": []}
    with tempfile.TemporaryDirectory(prefix="bench-spec-") as work:
        model = gguf(Path(work))
        for r in range(a.rounds):
            for label, spec in (("off", None), ("ngram", {"method": "ngram", "num_speculative_tokens": a.tokens})):
                proc, base = start_by_hand(model, 31871 + r * 2 + (label == "ngram"), a.threads, spec)
                try:
                    runs[label].append(measure(base, "bench", a.requests, a.max_tokens))
                finally:
                    stop(proc)
    rows = {k: sorted(v, key=lambda x: x["tokens_per_s"])[len(v) // 2] for k, v in runs.items()}
    ratio = round(rows["ngram"]["tokens_per_s"] / rows["off"]["tokens_per_s"], 3)
    show(f"llama.cpp server, tiny GGUF, {a.threads} thread(s): speculative ngram ({a.tokens} tokens) vs off",
         ["speculative", "requests", "tokens", "seconds", "tokens/s"],
         [[k, v["requests"], v["tokens"], v["seconds"], v["tokens_per_s"]] for k, v in rows.items()])
    print(f"ngram / off = {ratio}")
    save("speculative", {"args": vars(a), "runs": runs, "medians": rows, "ngram_over_off": ratio})


if __name__ == "__main__":
    main()
