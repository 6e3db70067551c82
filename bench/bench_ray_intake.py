"""The Ray driver's intake: how many candidates, epochs and progress updates per second one ``worker --ray``
takes in from its tasks (task -> hub actor -> driver -> SQLite), and where it saturates.

A real cluster on this machine (``tests/raycluster.py``: ``ray start --head`` with Ray's defaults, token
authentication on, the head at 0 CPUs, everything on 127.0.0.1) with ``--nodes`` nodes of ``--gpus`` fake
GPUs each (``ray start --num-gpus``: Ray schedules on them, nothing uses them). The driver is the real
``RayDriver`` (its hub, pump, heartbeats, ``StoreSink`` writes, ends); one job per fake GPU.

1. ``--real-jobs``: laptop-profile experiments on a small folder of the bundled sample, run for real by
   ``jobs.execute`` (on the CPU: the fake GPUs only give them their slots), as a check of the whole path.
2. Synthetic tasks in place of ``execute``, through the real ``HubSink``: for ``--window`` seconds each
   sends batches of ``--rows`` candidates (a progress update after each candidate, as a search does), one
   batch every ``interval`` seconds (0: as fast as the hub answers), then ``--epochs`` epochs;
   ``--intervals`` ramps the offered load. Candidate rows are counted as they land in SQLite (a second
   connection polling every 50 ms): the driver's intake is rows over the time from the first to the last
   landing; the offered rate is what the tasks sent over their window. Where intake stops following the
   offered rate (the landing outlasts the sending: lag), one driver is saturated.

The tasks share this machine's cores with the driver, so the saturation point is a lower bound.

Run:  .venv/bin/python bench/bench_ray_intake.py --nodes 4 --gpus 2 --real-jobs 4 \\
          --window 10 --rows 3 --epochs 10 --intervals 0.5,0.1,0.02,0
Writes ``bench/results/ray_intake.md`` and ``bench/results/ray_intake.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
HOME = Path(tempfile.mkdtemp(prefix="spikernel-ray-home-"))
os.environ["HOME"] = str(HOME)  # the cluster's token goes to HOME/.ray/auth_token, where Ray's clients look
for variable in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
    os.environ.pop(variable, None)

from bench_search import cpu_model  # noqa: E402
from raycluster import LoopbackCluster  # noqa: E402

from engine import api  # noqa: E402
from engine.store import Store  # noqa: E402

PAPER_S_PER_CANDIDATE = 0.30  # H100, paper profile, one candidate at a time (BENCHMARKS.md, "GPU")


def synthetic_task(window: float, rows: int, epochs: int, interval: float):
    """A stand-in for ``ray_driver._run_task`` that reports like a search and a training, through the real
    ``HubSink``: candidate batches of ``rows`` (a progress update after each candidate) for ``window``
    seconds, one every ``interval`` seconds (0: as fast as the hub takes them), then ``epochs`` epochs."""

    def task(spec, key, hub, token):
        import ray

        from engine.jobs.ray_driver import HubSink

        sink = HubSink(hub, key)
        sink.flush()  # the hub's handle resolved before the clock starts
        started = time.perf_counter()
        index = 0
        while time.perf_counter() - started < window:
            batch = []
            for _ in range(rows):
                batch.append(
                    {
                        "index": index,
                        "genotype": "0141 0032 0002 0000",
                        "score": -float(index),
                        "params": 155332,
                        "params_torch": 155332,
                        "conv_edges": 4,
                        "silent_layers": 0,
                        "firing_rate": 0.1,
                        "seconds": 0.3,
                    }
                )
                index += 1
                sink.progress("search", index, 0, "", None)
            sink.candidates(batch, time.perf_counter() - started)
            if interval:
                time.sleep(interval)
        sent = time.perf_counter() - started
        sink.search_done({"genotype": "0141 0032 0002 0000", "score": 0.0}, 155332, 155332, sent)
        for epoch in range(1, epochs + 1):
            sink.progress("train", epoch, epochs, "", None)
            record = {"epoch": epoch, "train_loss": 0.5, "train_accuracy": 0.5, "test_accuracy": 0.5}
            sink.epoch({**record, "firing_rate": 0.1, "seconds": 1.0, "lr": 0.1, "val_accuracy": 0.5})
        sink.flush()
        result = {"accuracy": 0.5}
        return {"result": result, "checkpoint": None, "node": ray.util.get_node_ip_address(), "shared": False}

    return task


class Landing(threading.Thread):
    """Counts the candidate rows in the database every 50 ms: when the first and the last landed."""

    def __init__(self, db: Path) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.first = self.last = None
        self.stop = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.db, timeout=30)
        seen = 0
        while not self.stop.is_set():
            (count,) = conn.execute("SELECT count(*) FROM candidates").fetchone()
            now = time.perf_counter()
            if count and self.first is None:
                self.first = now
            if count > seen:
                seen, self.last = count, now
            time.sleep(0.05)
        conn.close()


def serve(store: Store, ray, task=None) -> float:
    """Run the store's queue to its end with a real RayDriver (``task`` in place of execute's); seconds."""
    from engine.jobs.ray_driver import RayDriver

    driver = RayDriver(store, ray, stale_after=60.0, stop=threading.Event())
    if task is not None:
        driver.task = ray.remote(max_retries=0)(task)
    started = time.perf_counter()
    driver.serve(idle_exit=0.2)
    return time.perf_counter() - started


def real_jobs(ray, folder: Path, dataset: str, jobs: int, iterations: int) -> dict:
    store = Store(folder / "real.db")
    for _ in range(jobs):
        config = api.ExperimentConfig(
            dataset=dataset, kernel_sets=("1x1_3x3",), iterations=iterations, epochs=1, device="cpu", baseline=None
        )
        api.submit_experiment(config, store=store)
    seconds = serve(store, ray)
    runs = store.runs()
    return {
        "jobs": jobs,
        "done": sum(r["stage"] == "done" for r in runs),
        "seconds": seconds,
        "candidates": sum(r["candidates_done"] or 0 for r in runs),
        "devices": sorted({store.job(j["id"])["device"] for j in store.query("SELECT id FROM jobs")}),
    }


def synthetic(ray, folder: Path, dataset: str, slots: int, window: float, rows: int, epochs: int, interval: float):
    db = folder / f"synthetic-{interval}.db"
    store = Store(db)
    for _ in range(slots):
        config = api.ExperimentConfig(
            dataset=dataset,
            kernel_sets=("1x1_3x3",),
            iterations=1_000_000,
            epochs=epochs,
            device="cpu",
            baseline=None,
        )
        api.submit_experiment(config, store=store)
    landing = Landing(db)
    landing.start()
    wall = serve(store, ray, synthetic_task(window, rows, epochs, interval))
    landing.stop.set()
    landing.join(30)
    runs = store.runs()
    assert all(r["stage"] == "done" for r in runs), [r["stage"] for r in runs]
    (counts,) = store.query(
        "SELECT (SELECT count(*) FROM candidates) AS c, (SELECT count(DISTINCT run_id || ':' || \"index\") "
        "FROM candidates) AS distinct_c, (SELECT count(*) FROM epochs) AS e"
    )
    assert counts["c"] == counts["distinct_c"] == sum(r["candidates_done"] for r in runs), counts
    assert counts["e"] == slots * epochs, counts
    candidates = counts["c"]
    batches = candidates / rows
    span = landing.last - landing.first
    sent = max(r["search_seconds"] for r in runs)  # each task's sending window, as it measured it
    return {
        "interval": interval,
        "tasks": slots,
        "candidates": candidates,
        "batches": batches,
        "epochs": counts["e"],
        "progress_posted": candidates + counts["e"],
        "offered_candidates_s": sum(r["candidates_done"] / r["search_seconds"] for r in runs),
        "offered_batches_s": sum(r["candidates_done"] / rows / r["search_seconds"] for r in runs),
        "intake_candidates_s": candidates / span,
        "intake_batches_s": batches / span,
        "send_s": sent,
        "span_s": span,
        "lag_s": span - sent,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--gpus", type=int, default=2, help="fake GPUs per node")
    parser.add_argument("--real-jobs", type=int, default=4)
    parser.add_argument("--real-iterations", type=int, default=8)
    parser.add_argument("--window", type=float, default=10.0, help="seconds each synthetic task sends candidates")
    parser.add_argument("--rows", type=int, default=3, help="candidates per batch (a GPU's second at 0.3 s each)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--intervals", default="0.5,0.1,0.02,0", help="seconds between a task's calls")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    import ray
    from helpers import write_subset

    from engine.jobs.ray_driver import connect

    work = Path(tempfile.mkdtemp(prefix="spikernel-ray-intake-"))
    os.environ["SPIKERNEL_DATA"] = str(work)
    os.environ["OMP_NUM_THREADS"] = "1"
    from engine.data.images import load_dataset

    dataset = write_subset(load_dataset("sample"), work / "tiny", classes=2, train_per_class=48, test_per_class=16)
    cluster = LoopbackCluster(HOME, {**os.environ, "PYTHONPATH": str(ROOT)})
    report: dict = {
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "machine": f"{os.cpu_count()} cores, {cpu_model()}",
        "nodes": args.nodes,
        "fake_gpus": args.nodes * args.gpus,
    }
    try:
        cluster.generate_token()
        cluster.start_head()
        for n in range(args.nodes):
            cluster.add_node(f"n{n}", num_cpus=args.gpus, num_gpus=args.gpus)
        connect(ray, cluster.address)
        slots = args.nodes * args.gpus
        if args.real_jobs:
            report["real"] = real_jobs(ray, work, dataset, args.real_jobs, args.real_iterations)
            print("real:", report["real"], flush=True)
        report["synthetic"] = []
        for interval in (float(x) for x in args.intervals.split(",")):
            row = synthetic(ray, work, dataset, slots, args.window, args.rows, args.epochs, interval)
            report["synthetic"].append(row)
            print(json.dumps(row), flush=True)
    finally:
        ray.shutdown()
        cluster.stop()

    best = max(report["synthetic"], key=lambda r: r["intake_batches_s"])
    per_gpu_rows = 1 / PAPER_S_PER_CANDIDATE  # candidates a GPU scores per second, paper profile
    # Writes per GPU and second: execute sends its candidates once a second (FLUSH_S), and the driver writes
    # each job's heartbeat every HEARTBEAT_S (2 s); epochs (minutes apart on the paper profile) do not count.
    per_gpu_calls = 1.0 + 0.5
    report["gpus_served"] = {
        "by_rows": best["intake_candidates_s"] / per_gpu_rows,
        "by_calls": best["intake_batches_s"] / per_gpu_calls,
        "assumption": f"paper profile, {PAPER_S_PER_CANDIDATE} s per candidate per GPU: 3.3 candidates in one "
        "batch a second, plus a heartbeat every 2 s",
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "ray_intake.json").write_text(json.dumps(report, indent=2))
    lines = [
        "# Ray driver intake",
        "",
        f"`{report['command']}` on {report['machine']}: {args.nodes} nodes x {args.gpus} fake GPUs.",
        "",
        "| interval s | tasks | offered candidates/s | intake candidates/s | offered batches/s | "
        "intake batches/s | epochs | progress posted | sending s | landing s | lag s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["synthetic"]:
        lines.append(
            f"| {r['interval']} | {r['tasks']} | {r['offered_candidates_s']:.0f} | {r['intake_candidates_s']:.0f} | "
            f"{r['offered_batches_s']:.0f} | {r['intake_batches_s']:.0f} | {r['epochs']} | {r['progress_posted']} | "
            f"{r['send_s']:.1f} | {r['span_s']:.1f} | {r['lag_s']:.1f} |"
        )
    served = report["gpus_served"]
    lines += [
        "",
        f"GPUs one driver serves ({served['assumption']}): {min(served['by_rows'], served['by_calls']):.0f} "
        f"(by candidates {served['by_rows']:.0f}, by calls {served['by_calls']:.0f}).",
    ]
    if "real" in report:
        lines += ["", f"Real laptop-profile jobs: {report['real']}"]
    (args.out_dir / "ray_intake.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
