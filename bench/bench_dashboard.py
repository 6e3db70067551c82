"""Dashboard server time: the Results page's first render and a move of the memory-budget slider.

Builds a database like ``bench_store.py`` does (real schema, bulk-loaded candidates and epochs, every run
done with plausible results), then drives the real app with Streamlit's ``AppTest`` (the server's script
runner without a browser):

- **first render**: a new session opening Results (app.py, the sidebar and the whole page), timed around
  ``AppTest.run``, on a database of ``--experiments`` experiments;
- **slider**: moving the budget reruns only the budget fragment in the server (``@st.fragment``).
  ``AppTest`` reruns the whole page on a widget change, so the fragment's own server time is measured by
  timing its body (``st.fragment`` is wrapped before the app runs); the whole-page rerun is reported too,
  as an upper bound. Run on a database of ``--slider-experiments`` x 10 runs (10,000 by default).

Run:  .venv/bin/python bench/bench_dashboard.py
Writes ``bench/results/dashboard.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.chdir(ROOT)  # AppTest resolves the app's pages from here

import streamlit as st  # noqa: E402
from bench_store import build, machine  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from engine.store import Store  # noqa: E402

FIRST_RENDER_TARGET_S = 1.0
SLIDER_TARGET_MS = 100.0
fragment_ms: list[float] = []


def timed_fragment(real):
    """``st.fragment`` that also records how long each run of the fragment's body takes."""

    def decorate(func=None, **kwargs):
        if func is None:
            return lambda f: decorate(f, **kwargs)

        @functools.wraps(func)
        def body(*args, **kw):
            t0 = time.perf_counter()
            try:
                return func(*args, **kw)
            finally:
                fragment_ms.append((time.perf_counter() - t0) * 1e3)

        return real(body, **kwargs)

    return decorate


def database(folder: Path, experiments: int, seed: int) -> Path:
    path = folder / f"bench-{experiments}.db"
    args = argparse.Namespace(
        experiments=experiments, runs_per_experiment=10, candidates_per_run=20, epochs_per_run=10, batch_size=2000
    )
    build(Store(path), args, random.Random(seed))
    return path


def open_results(db: Path) -> tuple[AppTest, float]:
    os.environ["SPIKERNEL_DB"] = str(db)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.switch_page("pages/results.py")
    t0 = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - t0
    assert not at.exception, at.exception
    return at, elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiments", type=int, default=100, help="for the first render")
    p.add_argument("--slider-experiments", type=int, default=1000, help="x 10 runs, for the slider")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()
    logging.getLogger("streamlit").setLevel(logging.ERROR)  # bare-mode chatter while the databases build
    st.fragment = timed_fragment(st.fragment)

    with tempfile.TemporaryDirectory() as tmp:
        small, large = database(Path(tmp), args.experiments, 0), database(Path(tmp), args.slider_experiments, 1)
        open_results(small)  # imports, caches
        first = [open_results(small)[1] for _ in range(args.repeat)]
        first_large = [open_results(large)[1] for _ in range(max(3, args.repeat // 3))]

        at, _ = open_results(large)
        slider = at.slider[0]
        low, high = slider.min, slider.max
        fragment_ms.clear()
        page_ms = []
        for i in range(args.repeat):
            value = low + (high - low) * (i + 0.5) / args.repeat  # sweeps from "nothing fits" to "all fit"
            slider.set_value(round(value, 6))
            t0 = time.perf_counter()
            at.run()
            page_ms.append((time.perf_counter() - t0) * 1e3)
            slider = at.slider[0]
        moves = list(fragment_ms)

    result = {
        "machine": machine(),
        "first_render_s": {"experiments": args.experiments, "median": statistics.median(first), "max": max(first)},
        "first_render_large_s": {
            "experiments": args.slider_experiments,
            "median": statistics.median(first_large),
            "max": max(first_large),
        },
        "slider_fragment_ms": {
            "runs": args.slider_experiments * 10,
            "median": statistics.median(moves),
            "max": max(moves),
        },
        "slider_whole_page_ms": {"median": statistics.median(page_ms), "max": max(page_ms)},
    }
    rows = [
        (
            f"Results first render, {args.experiments} experiments ({args.experiments * 10:,} runs)",
            f"{result['first_render_s']['median'] * 1e3:.0f}",
            f"{result['first_render_s']['max'] * 1e3:.0f}",
            "< 1000",
            result["first_render_s"]["median"] < FIRST_RENDER_TARGET_S,
        ),
        (
            f"Results first render, {args.slider_experiments} experiments ({args.slider_experiments * 10:,} runs)",
            f"{result['first_render_large_s']['median'] * 1e3:.0f}",
            f"{result['first_render_large_s']['max'] * 1e3:.0f}",
            "–",
            None,
        ),
        (
            f"Budget slider move: fragment rerun, {args.slider_experiments * 10:,} runs in the store",
            f"{result['slider_fragment_ms']['median']:.0f}",
            f"{result['slider_fragment_ms']['max']:.0f}",
            "< 100",
            result["slider_fragment_ms"]["median"] < SLIDER_TARGET_MS,
        ),
        (
            "Budget slider move: whole-page rerun (upper bound)",
            f"{result['slider_whole_page_ms']['median']:.0f}",
            f"{result['slider_whole_page_ms']['max']:.0f}",
            "–",
            None,
        ),
    ]
    table = ["| server time | median ms | max ms | target ms | met? |", "|---|---|---|---|---|"]
    table += [
        f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {'–' if r[4] is None else 'yes' if r[4] else 'NO'} |" for r in rows
    ]
    text = "\n".join(table)
    print(text)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "dashboard.md").write_text(
        f"`{' '.join(['python', *sys.argv])}` on {result['machine'].get('cpu', 'this machine')}\n\n{text}\n"
    )
    (args.out_dir / "dashboard.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
