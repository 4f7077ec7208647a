"""The held-out evaluation files: every evaluation task of a run writes them at once."""
from concurrent.futures import ThreadPoolExecutor

from jobs.adapters import eval_tasks


def test_concurrent_writers_of_the_same_task_files_all_succeed(tmp_path):
    eval_tasks.held_out_paragraphs()  # the stdlib scan, once (cached per process)
    with ThreadPoolExecutor(8) as pool:
        specs = list(pool.map(lambda _: eval_tasks.write_tasks(tmp_path, n=50), range(32)))
    assert all(s == specs[0] for s in specs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean_bpb.jsonl", "clean_next.jsonl", "tasks.json"]
    assert len(eval_tasks.load_rows(specs[0]["clean_next"])) == 50
