"""End to end in a real browser: launch a tiny exploration, watch it finish, move the budget, download the model.

The dashboard runs as ``streamlit run app.py`` in a subprocess on a free port, against an empty database
in a temporary folder; headless Chromium drives it like a user; the dashboard starts its own detached
worker, which trains for real on the bundled sample. Expected values come from ``engine.api`` on the
same database. Full-page screenshots of the pages land in ``test-output/screenshots/``.

Without a browser (or without Playwright) the test is skipped, except under ``CI``, where that fails.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a real browser on the dashboard, with a real worker

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
WIDTH, HEIGHT = 1400, 900

KERNEL_SETS = ("1x1_3x3", "3x3_5x5")  # the Launch page's defaults
ITERATIONS, EPOCHS, BASELINE = 3, 1, "1x1_3x3_6x"
RUNS = len(KERNEL_SETS) + 1
CELLS = ITERATIONS * len(KERNEL_SETS) + 6

UI_TIMEOUT_MS = 60_000  # a page run, on two busy cores (the first one imports torch)
TRAINING_TIMEOUT_MS = (
    45 * 60_000
)  # three searches and one epoch each on the 5,000-image sample: minutes, more when the cores are busy


def missing(reason: str):
    """No browser here: skip, except in CI, where the end-to-end test must run."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}: .ci/run installs Chromium (apt-get install chromium)")
    pytest.skip(f"{reason}: install Chromium (apt-get install chromium) to run the end-to-end test")


def find_chromium() -> str | None:
    """``$SPIKERNEL_CHROMIUM``, else the distribution's Chromium (Playwright's own download is not used)."""
    candidates = [os.environ.get("SPIKERNEL_CHROMIUM"), "/usr/bin/chromium"]
    candidates += [shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright is not installed (pip install -r requirements-dev.txt)")
    executable = find_chromium()
    if executable is None:
        missing("no Chromium found (looked for $SPIKERNEL_CHROMIUM, /usr/bin/chromium, chromium on PATH)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def dashboard(tmp_path):
    """The app on a free port over an empty database; on the way out it stops, then so does its worker."""
    from engine import api

    db = tmp_path / "spikernel.db"
    env = {
        **os.environ,
        "SPIKERNEL_DB": str(db),
        "SPIKERNEL_DATA": str(tmp_path),
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONUNBUFFERED": "1",
    }
    port = free_port()
    log_path = tmp_path / "app.log"
    with open(log_path, "wb") as log:
        app = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "app.py",
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
                "--server.headless",
                "true",
                "--server.fileWatcherType",
                "none",
            ],  # no reruns (or inotify floods) when a file changes meanwhile
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    store = api.get_store(db)
    logs = {"app": log_path, "worker": tmp_path / "logs" / "worker.log"}
    try:
        deadline = time.monotonic() + 60
        while True:  # the server answers its health check within seconds
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert app.poll() is None, f"streamlit exited with {app.returncode}:\n{tail(log_path)}"
            assert time.monotonic() < deadline, f"streamlit did not answer /_stcore/health:\n{tail(log_path)}"
            time.sleep(0.2)
        yield {"url": url, "store": store, "db": db, "logs": logs}
    finally:
        stop(app)
        stop_worker(store)
        out = ROOT / "test-output"
        out.mkdir(exist_ok=True)
        for name, path in logs.items():
            if path.exists():
                shutil.copyfile(path, out / f"e2e-{name}.log")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stop_worker(store) -> None:
    """The dashboard's worker is detached (its own session) and idles 5 minutes before it exits: end it
    here, and check that it is gone (its database lock is free)."""
    from engine import api

    state = api.worker_status(store=store)
    if state["running"] and state.get("pid"):
        try:
            os.kill(state["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 30
        while api.worker_status(store=store)["running"] and time.monotonic() < deadline:
            time.sleep(0.2)
        if api.worker_status(store=store)["running"]:
            os.kill(state["pid"], signal.SIGKILL)
            time.sleep(1)
    assert not api.worker_status(store=store)["running"], "the dashboard's worker did not exit"


# ------------------------------------------------------------------------------------------ page helpers


def idle(page) -> None:
    """The script run is over: no 'Running…' status widget."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)


def screenshot(page, name: str) -> Path:
    """The whole page: Streamlit scrolls inside its main container, so the viewport grows to fit it."""
    idle(page)
    page.mouse.move(WIDTH - 1, 0)  # no hover effects (a heading's anchor, the sidebar's collapse arrow)
    height = HEIGHT
    for _ in range(3):  # a taller window can reflow the page: measure again until it fits
        needed = page.evaluate(
            "Math.max(document.documentElement.scrollHeight,"
            " document.querySelector('[data-testid=stMain]')?.scrollHeight ?? 0)"
        )
        if needed <= height:
            break
        height = needed
        page.set_viewport_size({"width": WIDTH, "height": height})
        page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    return path


def set_number(page, label: str, value: int) -> None:
    from playwright.sync_api import expect

    field = page.get_by_test_id("stNumberInput").get_by_role("spinbutton", name=label)
    field.fill(str(value))
    field.press("Enter")  # a number input sends its value on Enter or blur
    expect(field).to_have_value(str(value))


def metric(page, label: str):
    return page.get_by_test_id("stMetric").filter(has=page.get_by_test_id("stMetricLabel").get_by_text(label))


def nav(page, title: str) -> None:
    """Open a page from the sidebar's navigation, as a user would."""
    page.get_by_role("navigation", name="App pages").get_by_role("link", name=title, exact=True).click()


def slider_value(slider) -> float:
    """A slider's value in the browser (its ``input[type=range]``), before or after the app has it."""
    return float(slider.input_value())


# ------------------------------------------------------------------------------------------------ test


def test_launch_watch_choose_download(browser, dashboard, tmp_path):
    """Launch -> Jobs -> Results -> Model -> Study, as a user clicks through them, checked against ``engine.api``."""
    from playwright.sync_api import expect

    expect.set_options(timeout=UI_TIMEOUT_MS)
    page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT}, accept_downloads=True)
    page.set_default_timeout(UI_TIMEOUT_MS)
    try:
        page.goto(dashboard["url"])
        experiment_id = launch_exploration(page, dashboard["store"])
        runs = watch_jobs(page, dashboard["store"], experiment_id)
        chosen = move_budget(page, dashboard["store"], experiment_id, runs)
        download_model(page, dashboard["store"], chosen, tmp_path / "downloads")
        visit_study(page, dashboard["store"])
    except BaseException:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        try:
            page.screenshot(path=str(SCREENSHOTS / "failure.png"), full_page=True)
        except Exception:
            pass
        for name, path in dashboard["logs"].items():
            print(f"\n--- {name} log ---\n{tail(path)}")
        raise
    finally:
        page.close()


def launch_exploration(page, store) -> int:
    """Launch: the tiny exploration, and the summary under the form follows it. Returns its experiment id."""
    from playwright.sync_api import expect

    from engine import api
    from engine.core.space import TABLE_I

    expect(page.get_by_role("heading", name="Launch an exploration")).to_be_visible()
    expect(page.get_by_role("combobox", name="Dataset")).to_have_value("Bundled CIFAR-10 sample")
    expect(page.get_by_text("bundled with the app: ready")).to_be_visible()
    for name in (ks.name for ks in TABLE_I):  # exactly the two sets: the defaults, else click
        box = page.get_by_role("checkbox", name=name, exact=True)
        if box.is_checked() != (name in KERNEL_SETS):
            page.get_by_test_id("stCheckbox").filter(has=box).get_by_text(name, exact=True).click()
        expect(box).to_be_checked(checked=name in KERNEL_SETS)
    set_number(page, "Search iterations per kernel set", ITERATIONS)
    expect(page.get_by_role("switch", name="Measure search speed-up against a baseline")).to_be_checked()
    baseline = page.get_by_role("textbox", name="Baseline setting")
    baseline.fill(BASELINE)
    baseline.press("Enter")
    set_number(page, "Training epochs", EPOCHS)
    page.get_by_role("combobox", name="Device").click()
    page.get_by_role("option", name="CPU", exact=True).click()
    expect(page.get_by_role("combobox", name="Device")).to_have_value("CPU")
    # The summary follows the form: three runs, 3 + 3 + 6 cells, and a time estimate.
    expect(metric(page, "Runs")).to_contain_text(str(RUNS))
    expect(metric(page, "Cells scored")).to_contain_text(str(CELLS))
    expect(metric(page, "Estimated time")).to_contain_text(re.compile(r"\d+ (s|min)"))
    expect(page.get_by_text(re.compile(r"Fix \d+ field"))).to_have_count(0)
    launch = page.get_by_role("button", name=re.compile(r"Launch$"))
    expect(launch).to_be_enabled()
    launch.click()
    expect(page.get_by_text(f"Experiment #1 queued: {RUNS} run(s).")).to_be_visible()
    assert list(api.list_experiments(store=store)["id"]) == [1]
    config = api.get_experiment(1, store=store)["config"]
    assert tuple(config["kernel_sets"]) == KERNEL_SETS and config["baseline"] == BASELINE
    assert (config["iterations"], config["epochs"], config["device"], config["dataset"]) == (
        ITERATIONS,
        EPOCHS,
        "cpu",
        "sample",
    )
    screenshot(page, "launch")
    return 1


def watch_jobs(page, store, experiment_id: int):
    """Jobs: follow the launch's link and wait, on the page, until nothing is left to do. Returns the runs."""
    from playwright.sync_api import expect

    from engine import api

    started = time.monotonic()
    page.get_by_role("link", name=re.compile("Follow its progress on the Jobs page")).click()
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    expect(page.get_by_text(re.compile(r"job\(s\) queued or running · refreshing every"))).to_be_visible()
    # The page refreshes itself while work is queued or running, and says so when nothing is left.
    expect(page.get_by_text("Nothing queued or running.")).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
    print(f"\nthe dashboard's worker searched and trained {RUNS} runs in {time.monotonic() - started:.0f} s")
    runs = api.runs_frame([experiment_id], store=store)
    assert set(runs["status"]) == {"done"}, runs[["setting", "status", "error"]].to_string()
    expect(page.get_by_text(re.compile(r"^Done: test accuracy \d+\.\d%$"))).to_have_count(RUNS)
    for run in runs.itertuples():
        expect(page.get_by_text(f"Done: test accuracy {run.accuracy:.1%}").first).to_be_visible()
    expect(page.get_by_text(f"{RUNS}/{RUNS} runs done")).to_be_visible()
    worker = api.worker_status(store=store)  # the worker the dashboard started idles before it exits
    assert worker["running"], "the dashboard's worker exited right after its work"
    expect(page.get_by_test_id("stSidebar").get_by_text(f"Worker running (pid {worker['pid']})")).to_be_visible()
    screenshot(page, "jobs")
    return runs


def move_budget(page, store, experiment_id: int, runs):
    """Results: from a budget every model fits, down to nothing fits, up to where the smallest fits; Alg. 1's
    choice on the page is ``api.select``'s each time. Returns the model chosen last."""
    from playwright.sync_api import expect

    from engine import api

    nav(page, "Results")
    expect(page.get_by_role("heading", name="Memory budget (Alg. 1)")).to_be_visible()
    models = api.trained_models(runs)
    assert len(models) == len(runs)
    smallest, largest = min(m.params for m in models), max(m.params for m in models)
    everything = api.select([experiment_id], api.Budget(largest), store=store).chosen
    main = page.get_by_test_id("stMain")
    slider = main.get_by_role("slider")
    expect(slider).to_have_count(1)

    def shows(chosen) -> None:
        if chosen is None:
            expect(main.get_by_text(re.compile(r"^Nothing fits this budget"))).to_be_visible()
            expect(main.get_by_text(re.compile(r"^Alg\. 1 picks "))).to_have_count(0)
        else:
            expect(
                main.get_by_text(
                    re.compile(rf"^Alg\. 1 picks {re.escape(chosen.setting)}: {chosen.accuracy:.1%} test accuracy")
                )
            ).to_be_visible()
            expect(model_link(main, chosen)).to_be_visible()

    shows(everything)  # no budget at launch: the slider starts where every model fits
    assert slider_value(slider) * 1e6 >= largest
    slider.focus()
    slider.press("Home")
    assert slider_value(slider) * 1e6 < smallest
    shows(None)
    for _ in range(1000):  # step up until the smallest model fits: Alg. 1 takes the best of what fits there
        if slider_value(slider) * 1e6 >= smallest:
            break
        slider.press("ArrowRight")
    limit = slider_value(slider) * 1e6
    chosen = api.select([experiment_id], api.Budget(limit), store=store).chosen
    assert chosen is not None and chosen.params <= limit
    shows(chosen)
    if chosen.run_id == everything.run_id:  # the most accurate model is also the smallest: show all fitting
        slider.press("End")
        shows(everything)
    screenshot(page, "results")
    return chosen


def model_link(main, chosen):
    return main.get_by_role("link", name=re.compile(rf"Open the chosen model \({re.escape(chosen.setting)}\)"))


def download_model(page, store, chosen, folder: Path) -> None:
    """Model: open Alg. 1's choice from Results, download its file and load it like the page says."""
    from playwright.sync_api import expect

    from engine import api
    from engine.train.checkpoint import load_model

    model_link(page.get_by_test_id("stMain"), chosen).click()
    expect(page.get_by_role("heading", name="Model file")).to_be_visible()
    expect(page.get_by_role("combobox", name="Run")).to_have_value(re.compile(re.escape(chosen.setting)))
    assert f"run={chosen.run_id}" in page.url
    details = api.model_details(chosen.run_id, store=store)
    run, experiment = details["run"], details["experiment"]
    file_name = api.download_name(run)
    expect(page.get_by_text(file_name).first).to_be_visible()
    with page.expect_download() as download_info:
        page.get_by_role("button", name=re.compile(r"Download the model$")).click()
    download = download_info.value
    assert download.suggested_filename == file_name
    saved = folder / file_name
    download.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == run["checkpoint_sha256"]
    loaded = load_model(saved)
    meta = loaded.meta
    assert meta["setting"] == chosen.setting == run["setting"]
    assert meta["genotype"] == run["best_genotype"] == details["genotype"]
    assert meta["kernel_set"] == run["kernel_set"]
    assert meta["params"] == run["params"] == chosen.params
    assert meta["accuracy"] == pytest.approx(run["accuracy"])
    assert meta["accuracy"] == pytest.approx(chosen.accuracy)
    config = experiment["config"]
    assert (meta["epochs"], meta["seed"], meta["profile"]["name"]) == (
        config["epochs"],
        config["seed"],
        config["profile"],
    )
    assert not loaded.model.training
    screenshot(page, "model")


def visit_study(page, store) -> None:
    """Study: opened from the navigation. This test's database holds no study (it launches none: a study
    trains several cells per kernel set), so the page shows its empty state with the launch form open and valid."""
    from playwright.sync_api import expect

    from engine import api

    nav(page, "Study")
    expect(page.get_by_role("heading", name="Study", exact=True)).to_be_visible()
    assert not (api.list_experiments(store=store)["kind"] == "study").any()
    expect(page.get_by_text("No studies yet: launch one above.")).to_be_visible()
    expect(page.get_by_role("combobox", name="Dataset")).to_have_value("Bundled CIFAR-10 sample")
    expect(page.get_by_role("button", name=re.compile(r"Launch study$"))).to_be_enabled()
    screenshot(page, "study")


def test_a_first_visit_straight_to_a_page_gets_the_whole_app(browser, dashboard):
    """A bookmark of /jobs opened right after the server starts: the app's own navigation (its five pages,
    nothing else from ``pages/``) and the sidebar; queued work then starts the worker from that page."""
    from playwright.sync_api import expect

    from engine import api

    expect.set_options(timeout=UI_TIMEOUT_MS)
    page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
    try:
        page.goto(f"{dashboard['url']}/jobs")
        expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
        sidebar = page.get_by_test_id("stSidebar")
        expect(sidebar.get_by_text("Worker idle")).to_be_visible()
        links = page.get_by_role("navigation", name="App pages").get_by_role("link")
        expect(links).to_have_text(
            [re.compile(f"{title}$") for title in ("Launch", "Jobs", "Results", "Study", "Model")]
        )

        config = api.ExperimentConfig(
            dataset="sample", kernel_sets=("1x1_3x3",), iterations=2, epochs=1, device="cpu", baseline=None
        )
        api.submit_experiment(config, store=dashboard["store"])
        page.reload()
        expect(sidebar.get_by_text(re.compile(r"Worker (starting|running)"))).to_be_visible()
    finally:
        page.close()
