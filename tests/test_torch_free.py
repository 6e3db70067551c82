"""The dashboard, the store and Alg. 1 run without torch: each is checked in a fresh interpreter, since this
test process has long imported torch. The model stack loads only where work runs (the worker's jobs,
deployment, the command line's computing commands) and where torch alone can answer (which GPUs exist)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from helpers import ROOT, environment

# The torch-free packages, one by one, then the dashboard's modules; each page's and app.py's own top-level
# imports are added below.
CORE = [
    "engine",
    "engine.core",
    "engine.data",
    "engine.study",
    "engine.store",
    "engine.jobs",
    "engine.api",
    "engine.cli",
    "ui.charts",
    "ui.widgets",
]
SCRIPTS = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]


def top_level_imports(path: Path) -> list[str]:
    """The modules a script imports at its top level (a Streamlit page cannot be imported: importing runs it)."""
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
            names.append(node.module)
    return names


def fresh(code: str, env: dict | None = None) -> dict:
    """Run ``code`` in a new interpreter at the project root; it prints one JSON object as its last line."""
    env = environment(OMP_NUM_THREADS="1", **(env or {}))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, text=True, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_core_and_every_page_import_without_torch():
    modules = list(dict.fromkeys(CORE + [m for script in SCRIPTS for m in top_level_imports(script)]))
    assert {"ui.widgets", "engine.api", "streamlit"} <= set(modules)
    # One by one, so a failure names the module that brought torch in.
    result = fresh(
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    if 'torch' in sys.modules:\n"
        "        print(json.dumps({'torch_from': name})); break\n"
        "else:\n"
        "    print(json.dumps({'torch_from': None}))\n"
    )
    assert result["torch_from"] is None, f"importing {result['torch_from']} imports torch"


def test_the_plain_api_answers_without_torch(studio):
    """Dataset checks and sizes, budgets, the worker's state: what the pages ask of the API stays torch-free.
    (Which devices exist is torch's to say: ``api.devices`` and the device check of ``api.validate``.)"""
    result = fresh(
        "import json, sys\n"
        "from engine import api\nfrom engine.data import catalogue as datasets\n"
        f"mini = {studio['mini']!r}\n"
        "# on disk, downloadable or why not, never from torchvision; the host is not asked at test time\n"
        "datasets._reachable = lambda url, timeout=0: False\n"
        "offline = api.dataset_status('cifar10')\n"
        "datasets._reachable = lambda url, timeout=0: True\n"
        "online = api.dataset_status('cifar10')\n"
        "answers = {\n"
        "    'sample': api.dataset_status('sample'),\n"
        "    'folder': api.dataset_status(mini),\n"
        "    'cifar10': [offline, online],\n"
        "    'sizes': api.network_sizes('laptop', mini, ['1x1_3x3']).to_dict('records'),\n"
        "    'shape': datasets.dataset_shape(mini).image_size,\n"
        "    'budget': str(api.Budget.parse('4MB', 8)),\n"
        "    'bytes': [api.budget_in_bytes(t) for t in ('40MB', '3MiB', '10M', '40 M B')],\n"
        "    'worker': api.worker_status()['running'],\n"
        "}\n"
        "answers['torch'] = 'torch' in sys.modules\n"
        "print(json.dumps(answers))\n",
        env={"SPIKERNEL_DATA": str(studio["root"]), "SPIKERNEL_DB": str(studio["root"] / "plain.db")},
    )
    assert result["sample"] == [True, "bundled"] and result["folder"] == [True, "on disk"]
    offline, online = result["cifar10"]
    assert offline[0] is False and "cannot be reached" in offline[1] and online == [True, "will download"]
    assert result["sizes"][0]["kernel_set"] == "1x1_3x3" and result["sizes"][0]["min_params"] > 0
    assert result["shape"] == 32 and result["budget"] == "4 MB at 8-bit"
    assert result["bytes"] == [True, True, False, False] and result["worker"] is False
    assert not result["torch"]


def test_commands_that_only_read_or_queue_need_no_torch(studio, tmp_path):
    """``profile`` (arithmetic), ``submit``, ``jobs``, ``cancel``, ``retry`` and ``export`` leave torch alone."""
    db = str(tmp_path / "cli.db")
    commands = [
        ["profile", "--dataset", studio["mini"], "--kernel-set", "1x1_3x3"],
        [
            "--db",
            db,
            "submit",
            "--dataset",
            studio["mini"],
            "--kernel-sets",
            "1x1_3x3",
            "--iterations",
            "2",
            "--epochs",
            "1",
            "--baseline",
            "",
            "--budget",
            "4MB",
            "--bits",
            "8",
        ],
        ["--db", db, "jobs"],
        ["--db", db, "cancel", "--experiment", "1"],
        ["--db", db, "retry", "1"],
        ["--db", db, "export", "1", "--format", "csv"],
    ]
    result = fresh(
        "import json, sys\n"
        "from engine.__main__ import main\n"
        f"codes = [main(argv) for argv in {commands!r}]\n"
        "print(json.dumps({'codes': codes, 'torch': 'torch' in sys.modules}))\n",
        env={"SPIKERNEL_DATA": str(studio["root"])},
    )
    assert result["codes"] == [0] * len(commands) and not result["torch"]


def test_cifar_files_are_where_torchvision_looks():
    """``check_dataset`` knows where torchvision keeps CIFAR without importing it; the loader asks torchvision."""
    from torchvision.datasets import CIFAR10, CIFAR100

    from engine.data.catalogue import CIFAR_FILES

    for name, cls in (("cifar10", CIFAR10), ("cifar100", CIFAR100)):
        files = CIFAR_FILES[name]
        assert (files.folder, files.archive, files.url) == (cls.base_folder, cls.filename, cls.url)


def test_results_jobs_and_model_pages_render_without_torch(finished, studio):
    """The pages that read results (a real finished experiment) never load torch; neither does finding a
    trained model's file (``api.checkpoint_path``, the README's way to it). The Launch page asks torch which
    GPUs exist, the Model page's measure and deployment downloads run the model: those load it when used."""
    result = fresh(
        "import json, sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        "from engine import api\n"
        "api.ensure_worker = lambda **kw: None  # queued work of other tests stays queued\n"
        f"experiment = {finished['experiment_id']}\n"
        "runs = api.runs_frame([experiment])\n"
        "store = api.get_store()\n"
        "paths = [str(api.checkpoint_path(int(r))) for r in runs.run_id]\n"
        "expected = [str(store.root / c) for c in runs.checkpoint]\n"
        "shown = {}\n"
        "for page in ('pages/jobs.py', 'pages/results.py', 'pages/model.py'):\n"
        "    at = AppTest.from_file('app.py', default_timeout=120)\n"
        "    at.session_state['chosen_run_id'] = int(runs.run_id.iloc[-1])  # as Results leaves it for Model\n"
        "    at.switch_page(page)\n"
        "    at.run()\n"
        "    if page == 'pages/results.py':\n"
        "        at.selectbox(key='results_experiment').set_value(experiment).run()\n"
        "    assert not at.exception, [e.value for e in at.exception]\n"
        "    shown[page] = [m.value for m in at.markdown] + [m.label for m in at.metric]\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'paths': paths, 'expected': expected, 'shown': shown}))\n",
        env={"SPIKERNEL_DB": str(studio["db"]), "SPIKERNEL_DATA": str(studio["root"])},
    )
    assert result["paths"] == result["expected"] and all(Path(p).is_file() for p in result["paths"])
    assert any("Test accuracy" in text for text in result["shown"]["pages/model.py"])
    assert not result["torch"], "a page that only reads results imported torch"
