"""Store-at-scale benchmark: the dashboard's queries and a submit against a full database.

Builds a database through the real schema (``Store``): ``--experiments`` experiments of
``--runs-per-experiment`` runs each, through ``Store.add_experiment`` (experiment, runs, jobs, one event),
then bulk-loads ``--candidates-per-run`` candidates and ``--epochs-per-run`` epochs per run with
``insert_all`` in one write transaction, and marks every run and job done with plausible results
(accuracy, parameters, checkpoint) and the events a worker would have written.

Then, on one warm connection as the dashboard holds, it times each ``engine.api`` call the dashboard
makes (median and max over ``--repeat`` calls after one warm-up call, whose time is reported as
``first``), a ``submit_experiment`` (each call records a new experiment) and the raw ``Store.claim`` on
a queue of ``--queue`` queued jobs (added after the dashboard timings and the file-size measurement). It
also records the query plan of every SELECT each call runs.

Run:  .venv/bin/python bench/bench_store.py --experiments 100 --runs-per-experiment 10 \\
          --candidates-per-run 1000 --repeat 20
Writes ``bench/results/store.md`` and ``bench/results/store.json`` (``--out-dir`` to change).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

import sqlite3  # noqa: E402

from engine import api  # noqa: E402
from engine.core.space import KernelSet  # noqa: E402
from engine.store import CANDIDATE_COLUMNS, EPOCH_COLUMNS, Store  # noqa: E402

READ_TARGET_MS = 100.0
SUBMIT_TARGET_MS = 50.0
CLAIM_TARGET_MS = 50.0  # not in the requirement: a claim is one write transaction, like a submit
OPS = "01234"


def _shown(path: Path) -> str:
    """A path as the report shows it: inside the checkout relative to it, elsewhere by its name alone."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return path.name


def settings(n: int) -> list[tuple[str, int]]:
    """``n`` distinct (kernel set, iterations) pairs."""
    pairs = [KernelSet(a, b).name for a, b in itertools.combinations(range(1, 12, 2), 2)]
    out = []
    for iterations in itertools.count(1000, 1000):
        for ks in pairs:
            out.append((ks, iterations))
            if len(out) == n:
                return out
    raise AssertionError


def genotype(rng: random.Random) -> str:
    rows = []
    for i in range(4):
        rows.append("".join(rng.choice(OPS) if j > i else "0" for j in range(4)))
    return " ".join(rows)


def build(store: Store, args, rng: random.Random) -> dict:
    """Fill the store; returns timings of the phases."""
    t0 = time.perf_counter()
    specs = settings(args.runs_per_experiment)
    all_runs = []
    for e in range(args.experiments):
        iterations = args.candidates_per_run
        runs = [
            {"setting": f"{ks}_{it}x", "kernel_set": ks, "iterations": it, "is_baseline": int(p == 0)}
            for p, (ks, it) in enumerate(specs)
        ]
        config = {
            "dataset": "sample",
            "kernel_sets": sorted({r["kernel_set"] for r in runs}),
            "iterations": iterations,
            "baseline": runs[0]["setting"],
            "profile": "laptop",
            "epochs": args.epochs_per_run,
            "seed": e,
            "device": "auto",
            "precision": "fp32",
            "budget": None,
            "bits": None,
            "name": f"bench {e}",
        }
        ids = store.add_experiment(f"bench {e}", config, profile="laptop", reduced=True, runs=runs)
        all_runs += [(ids["experiment_id"], r, j) for r, j in zip(ids["run_ids"], ids["job_ids"])]
    t1 = time.perf_counter()

    def candidate_rows():
        for _, run_id, _ in all_runs:
            for i in range(args.candidates_per_run):
                edges = rng.randint(0, 6)
                yield {
                    "run_id": run_id,
                    "index": i,
                    "genotype": genotype(rng),
                    "score": rng.uniform(1000, 2000),
                    "params": rng.randint(50_000, 5_000_000),
                    "params_torch": rng.randint(50_000, 5_000_000),
                    "conv_edges": edges,
                    "silent_layers": rng.randint(0, 2),
                    "firing_rate": rng.random(),
                    "seconds": rng.uniform(0.1, 0.4),
                }

    def epoch_rows():
        for _, run_id, _ in all_runs:
            for epoch in range(1, args.epochs_per_run + 1):
                yield {
                    "run_id": run_id,
                    "epoch": epoch,
                    "train_loss": 2.3 / epoch,
                    "train_accuracy": 0.1 + 0.05 * epoch,
                    "test_accuracy": 0.1 + 0.04 * epoch,
                    "firing_rate": 0.1,
                    "seconds": 60.0,
                    "lr": 0.1 / epoch,
                }

    assert set(CANDIDATE_COLUMNS) <= set(next(candidate_rows())) and set(EPOCH_COLUMNS) <= set(next(epoch_rows()))
    with store.write() as db:
        db["candidates"].insert_all(candidate_rows(), batch_size=args.batch_size)
        db["epochs"].insert_all(epoch_rows(), batch_size=args.batch_size)
    t2 = time.perf_counter()

    now = time.time()
    events = []
    with store.write() as db:
        for experiment_id, run_id, job_id in all_runs:
            params = rng.randint(100_000, 3_000_000)
            search = args.candidates_per_run * rng.uniform(0.15, 0.3)
            setting = db.execute("SELECT setting FROM runs WHERE id = ?", [run_id]).fetchone()[0]
            db["runs"].update(
                run_id,
                {
                    "stage": "done",
                    "candidates_done": args.candidates_per_run,
                    "search_seconds": search,
                    "best_genotype": genotype(rng),
                    "best_score": rng.uniform(1500, 2000),
                    "params": params,
                    "params_torch": params + 1000,
                    "epochs_done": args.epochs_per_run,
                    "train_seconds": 60.0 * args.epochs_per_run,
                    "accuracy": rng.uniform(0.2, 0.8),
                    "firing_rate": rng.uniform(0.05, 0.2),
                    "checkpoint": f"experiments/{experiment_id}/{setting}/model.pt",
                    "checkpoint_bytes": params * 4 + 2048,
                    "checkpoint_sha256": f"{rng.getrandbits(256):064x}",
                    "finished": now,
                },
            )
            db["jobs"].update(
                job_id,
                {
                    "status": "done",
                    "stage": "train",
                    "done": args.epochs_per_run,
                    "total": args.epochs_per_run,
                    "note": "done",
                    "eta_seconds": 0,
                    "attempts": 1,
                    "worker": "bench:1",
                    "device": "cpu",
                    "started": now - 1000,
                    "heartbeat": now,
                    "finished": now,
                },
            )
            for message in ("started on bench:1 (cpu)", "search done", "done, accuracy 50.0%"):
                events.append(
                    {
                        "time": now,
                        "experiment_id": experiment_id,
                        "run_id": run_id,
                        "level": "info",
                        "message": f"{setting}: {message}",
                    }
                )
        db["events"].insert_all(events, batch_size=args.batch_size)
    t3 = time.perf_counter()
    return {"add_experiments_s": t1 - t0, "bulk_candidates_epochs_s": t2 - t1, "mark_done_s": t3 - t2}


def add_queue(store: Store, n: int) -> float:
    """One experiment of ``n`` queued runs (and jobs), bulk-inserted; returns seconds."""
    t0 = time.perf_counter()
    now = time.time()
    with store.write() as db:
        experiment_id = (
            db["experiments"]
            .insert(
                {
                    "name": "queue",
                    "config": "{}",
                    "dataset": "sample",
                    "profile": "laptop",
                    "reduced": 1,
                    "created": now,
                }
            )
            .last_pk
        )
        first = db.execute("SELECT coalesce(max(id), 0) + 1 FROM runs").fetchone()[0]
        db["runs"].insert_all(
            (
                {
                    "id": first + p,
                    "experiment_id": experiment_id,
                    "position": p,
                    "setting": f"{ks}_{it}x",
                    "kernel_set": ks,
                    "iterations": it,
                }
                for p, (ks, it) in enumerate(settings(n))
            ),
            batch_size=1000,
        )
        db["jobs"].insert_all(({"run_id": first + p, "created": now, "total": 1000} for p in range(n)), batch_size=1000)
    return time.perf_counter() - t0


def db_bytes(path: Path) -> dict:
    sizes = {s: (Path(str(path) + s).stat().st_size if Path(str(path) + s).exists() else 0) for s in ("", "-wal")}
    return {"db": sizes[""], "wal": sizes["-wal"]}


class Tracer:
    """Records the SELECT statements a call runs on the store's connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn, self.statements = conn, []

    def __enter__(self):
        self.conn.set_trace_callback(self.statements.append)
        return self

    def __exit__(self, *exc):
        self.conn.set_trace_callback(None)


def plans(conn: sqlite3.Connection, statements: list[str]) -> list[dict]:
    out, seen = [], set()
    for sql in statements:
        text = " ".join(sql.split())
        if not text.upper().startswith("SELECT") or text in seen:
            continue
        seen.add(text)
        try:
            rows = conn.execute("EXPLAIN QUERY PLAN " + text).fetchall()
        except sqlite3.Error as e:  # a statement traced with unexpanded parameters
            rows = [(0, 0, 0, f"(not explained: {e})")]
        out.append({"sql": text, "plan": [r[3] for r in rows]})
    return out


def timed(name: str, fn, repeat: int, target: float, conn: sqlite3.Connection) -> dict:
    with Tracer(conn) as tracer:
        t = time.perf_counter()
        fn()
        first = (time.perf_counter() - t) * 1000
    times = []
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    median = statistics.median(times)
    return {
        "query": name,
        "median_ms": median,
        "max_ms": max(times),
        "first_ms": first,
        "target_ms": target,
        "met": None if target is None else median < target,
        "plans": plans(conn, tracer.statements),
    }


def machine() -> dict:
    model = ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        load = [round(x, 1) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "load_before": load,
    }


def report(result: dict) -> str:
    a, m = result["args"], result["machine"]
    lines = [
        "# Store at scale",
        "",
        f"`{result['command']}`  ",
        f"{result['time']}, commit {result['commit']}; {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, "
        f"SQLite {m['sqlite']}, load average before {m['load_before']}.",
        "",
        f"Database: {a['experiments']} experiments, {result['counts']['runs']:,} runs, "
        f"{result['counts']['candidates']:,} candidates, {result['counts']['epochs']:,} epochs, "
        f"{result['counts']['events']:,} events; file {result['size']['db'] / 1e6:.1f} MB after a WAL checkpoint "
        f"(built in {sum(result['build'].values()):.1f} s: {', '.join(f'{k} {v:.1f}' for k, v in result['build'].items())}). "
        f"Claim timed on a queue of {a['queue']:,} queued jobs added afterwards.",
        "",
        f"Median and max of {a['repeat']} calls on a warm connection after one warm-up call (`first`).",
        "",
        "| query | median ms | max ms | first ms | target ms | met? |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        target = "-" if r["target_ms"] is None else f"< {r['target_ms']:g}"
        met = "-" if r["met"] is None else "yes" if r["met"] else "**no**"
        lines.append(
            f"| `{r['query']}` | {r['median_ms']:.1f} | {r['max_ms']:.1f} | {r['first_ms']:.1f} | {target} | {met} |"
        )
    lines += ["", "## Query plans", ""]
    for r in result["rows"]:
        for p in r["plans"]:
            lines += [f"`{r['query']}`: `{p['sql'][:200]}`", "", "```", *p["plan"], "```", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiments", type=int, default=100)
    p.add_argument("--runs-per-experiment", type=int, default=10)
    p.add_argument("--candidates-per-run", type=int, default=1000)
    p.add_argument("--epochs-per-run", type=int, default=10)
    p.add_argument("--queue", type=int, default=100_000, help="queued jobs for the claim timing")
    p.add_argument("--db", type=Path, default=None, help="database file (default: a fresh temporary one)")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args()

    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_store_")
        args.db = Path(tmp.name) / "spikernel.db"
    if args.db.exists():
        raise SystemExit(f"{args.db} exists; the benchmark builds a fresh database")
    rng = random.Random(args.seed)
    machine_info = machine()

    store = Store(args.db)
    print(f"building {args.db} ...", file=sys.stderr, flush=True)
    build_times = build(store, args, rng)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = db_bytes(args.db)
    counts = {
        t: store.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("experiments", "runs", "candidates", "epochs", "jobs", "events")
    }
    print(f"built in {sum(build_times.values()):.1f} s: {counts}, {size['db'] / 1e6:.1f} MB", file=sys.stderr)

    experiments = [e["id"] for e in store.experiments()]
    one, two = experiments[len(experiments) // 2], experiments[len(experiments) // 3]
    run_id = store.runs([one])[0]["id"]
    conn = store.db.conn
    config = api.ExperimentConfig(
        dataset="sample", kernel_sets=("1x1_3x3", "3x3_5x5"), iterations=1000, epochs=10, baseline=None
    )
    n = args.repeat
    R, S = READ_TARGET_MS, SUBMIT_TARGET_MS
    calls = [
        ("list_experiments()", lambda: api.list_experiments(store=store), R),
        ("runs_frame([id])", lambda: api.runs_frame([one], store=store), R),
        ("runs_frame(None)", lambda: api.runs_frame(None, store=store), R),
        ("runs_frame([id, id])", lambda: api.runs_frame([one, two], store=store), R),
        ("epochs_frame([id])", lambda: api.epochs_frame([one], store=store), R),
        ("candidates_frame(run_id)", lambda: api.candidates_frame(run_id, store=store), R),
        ("jobs_frame()", lambda: api.jobs_frame(store=store), R),
        ("events_frame(id)", lambda: api.events_frame(one, store=store), R),
        ('select([id], "10M")', lambda: api.select([one], "10M", store=store), R),
        ('export_experiment(id, "csv")', lambda: api.export_experiment(one, "csv", store=store), R),
        ('export_experiment(id, "json")', lambda: api.export_experiment(one, "json", store=store), R),
        ("estimate_seconds(config)", lambda: api.estimate_seconds(config, store=store), R),
        ("submit_experiment(config)", lambda: api.submit_experiment(config, store=store), S),
    ]
    if not hasattr(api, "estimate_seconds"):  # older engine
        calls = [c for c in calls if not c[0].startswith("estimate_seconds")]
    rows = []
    for name, fn, target in calls:
        rows.append(timed(name, fn, n, target, conn))
        r = rows[-1]
        print(
            f"{name}: median {r['median_ms']:.1f} ms, max {r['max_ms']:.1f}, first {r['first_ms']:.1f}", file=sys.stderr
        )

    doomed = iter(sorted(experiments)[: n + 1])  # done experiments with all their candidates
    rows.append(timed("delete_experiment(id)", lambda: api.delete_experiment(next(doomed), store=store), n, None, conn))
    r = rows[-1]
    print(f"delete: median {r['median_ms']:.1f} ms, max {r['max_ms']:.1f}, first {r['first_ms']:.1f}", file=sys.stderr)

    queue_s = add_queue(store, args.queue)
    print(f"queue of {args.queue} added in {queue_s:.1f} s", file=sys.stderr)
    rows.append(
        timed(
            f"Store.claim (queue {args.queue:,})",
            lambda: store.claim("bench:2", "cpu", stale_after=600.0),
            n,
            CLAIM_TARGET_MS,
            conn,
        )
    )
    r = rows[-1]
    print(f"claim: median {r['median_ms']:.1f} ms, max {r['max_ms']:.1f}, first {r['first_ms']:.1f}", file=sys.stderr)

    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "engine/store", "engine/api.py"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    result = {
        "command": ".venv/bin/python bench/bench_store.py " + shlex.join(sys.argv[1:]),
        "time": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit + (" (engine/store or api.py modified)" if dirty else ""),
        "machine": machine_info,
        "args": {k: _shown(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "counts": counts,
        "size": size,
        "build": {k: round(v, 2) for k, v in build_times.items()},
        "rows": rows,
    }
    text = report(result)
    table_end = text.index("## Query plans")
    print(text[:table_end])
    if not args.no_write:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "store.md").write_text(text)
        (args.out_dir / "store.json").write_text(json.dumps(result, indent=1) + "\n")
    store.close()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
