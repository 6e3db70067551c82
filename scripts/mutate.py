"""Mutation testing of our own: does a module's test selection fail when the module's code is subtly wrong?

Each mutant changes one thing in one module: a comparison flipped (``<`` to ``<=``, ``==`` to ``!=``...),
``and``/``or`` swapped, a ``not`` dropped, a number changed (``n`` to ``n + 1``, ``0``/``1`` swapped),
``True``/``False`` swapped, ``+``/``-`` or ``*``/``/`` swapped, or a ``return x`` made ``return None``.
Docstrings, messages (strings and f-strings) and annotations are left alone. The mutant is written into a
copy of ``engine/`` and ``tests/`` in a temporary folder, never into the working tree, and the module's tests
run there on one mutant at a time (``-x``, a timeout per mutant; the tests that run the mutated line first).
A mutant the tests fail on is killed; one they all pass survives, and so does one on a line no test runs.
Survivors are listed with their line: each is either a missing test or a change nobody can see.

    .venv/bin/python scripts/mutate.py                    # every target
    .venv/bin/python scripts/mutate.py selection --list   # one target's mutants, without running them
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    module: str  # path from the repository root
    tests: tuple[str, ...]  # pytest arguments: files or node ids, run from the copy's root
    only: tuple[str, ...] = ()  # top-level functions and classes to mutate (all when empty)


TARGETS = {
    "selection": Target("engine/core/selection.py", ("tests/test_select.py",)),
    "space": Target("engine/core/space.py", ("tests/test_space.py",)),
    # The validation layer: the experiment's field checks, and the command line's bounded numbers.
    "config": Target(
        "engine/api/_config.py",
        ("tests/test_config.py",),
        ("ConfigError", "ExperimentConfig", "_from_dict", "_is_int", "validate", "check_name", "distinct_cell_count"),
    ),
    "arguments": Target("engine/cli/_common.py", ("tests/test_config.py",), ("whole", "number")),
}

FLIP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
FLIP |= {ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
ARITHMETIC = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}


@dataclass(frozen=True)
class Mutant:
    line: int
    end_line: int
    before: str  # the source of the node changed
    after: str  # what replaces it
    start: int  # byte offsets of the node in the module's UTF-8 source
    end: int

    def apply(self, source: bytes) -> bytes:
        return source[: self.start] + self.after.encode() + source[self.end :]

    def __str__(self) -> str:
        return f"{_short(self.before)}  ->  {_short(self.after)}"


def _short(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _variants(node: ast.AST) -> list[ast.AST]:
    """The mutated copies of ``node`` (none for a node no operator applies to)."""

    def changed(edit) -> ast.AST:
        new = copy.deepcopy(node)
        edit(new)
        return new

    if isinstance(node, ast.Compare):
        return [
            changed(lambda n, i=i: n.ops.__setitem__(i, FLIP[type(op)]()))
            for i, op in enumerate(node.ops)
            if type(op) in FLIP
        ]
    if isinstance(node, ast.BoolOp):
        return [changed(lambda n: setattr(n, "op", ast.Or() if isinstance(n.op, ast.And) else ast.And()))]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return [node.operand]
    if isinstance(node, ast.BinOp) and type(node.op) in ARITHMETIC:
        if any(isinstance(side, ast.JoinedStr) or _is_text(side) for side in (node.left, node.right)):
            return []  # joining messages
        return [changed(lambda n: setattr(n, "op", ARITHMETIC[type(n.op)]()))]
    if isinstance(node, ast.Constant) and isinstance(node.value, bool):
        return [ast.Constant(not node.value)]
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        value = node.value
        return [ast.Constant({0: 1, 1: 0}.get(value, value + 1) if isinstance(value, int) else value + 1)]
    if isinstance(node, ast.Return) and node.value is not None and not _is_none(node.value):
        return [ast.Return(ast.Constant(None))]
    return []


def _is_text(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str | bytes)


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _skipped(tree: ast.Module) -> set[int]:
    """Ids of the nodes under which nothing is mutated: f-strings (messages) and annotations. Plain strings,
    docstrings included, have no mutants anyway."""
    roots = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            roots.append(node)
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
        elif isinstance(node, ast.arg) and node.annotation is not None:
            roots.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns is not None:
            roots.append(node.returns)
    return {id(n) for root in roots for n in ast.walk(root)}


def mutants(source: str, only: tuple[str, ...] = ()) -> list[Mutant]:
    """Every mutant of a module's source, in source order."""
    data = source.encode()
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line.encode()))
    tree = ast.parse(source)
    skipped = _skipped(tree)
    scopes = [n for n in tree.body if not only or getattr(n, "name", None) in only]
    found = []
    for scope in scopes:
        for node in ast.walk(scope):
            if id(node) in skipped or not hasattr(node, "lineno"):
                continue
            start = starts[node.lineno - 1] + node.col_offset
            end = starts[node.end_lineno - 1] + node.end_col_offset
            before = data[start:end].decode()
            for variant in _variants(node):
                after = ast.unparse(variant)
                if not isinstance(node, ast.stmt):
                    after = f"({after})"  # keeps precedence wherever the expression stood
                found.append(Mutant(node.lineno, node.end_lineno, before, after, start, end))
    return sorted(found, key=lambda m: (m.start, m.end, m.after))


# ------------------------------------------------------------------- running the tests on the copy
# This file is also the pytest plugin of those runs (``-p mutate``). The first, unmutated run records which
# tests run which lines of the module and how long each takes; each mutant then runs the tests that run its
# lines, fastest first, and ``-x`` stops at the first failure. A mutant that survives them meets the other
# tests too before it counts as a survivor (a cached result can hide which tests run a line).

_RECORD, _MODULE, _ONLY = (os.environ.get(k) for k in ("MUTATE_RECORD", "MUTATE_MODULE", "MUTATE_ONLY"))
_lines: dict[int, set[str]] = {}
_seconds: dict[str, float] = {}
_test = ["*"]  # the test running now; "*" while modules are imported: every test stands on those lines
_ours: dict[str, bool] = {}


def _trace(frame, event, arg):
    name = frame.f_code.co_filename
    if name not in _ours:
        _ours[name] = os.path.realpath(name) == _MODULE
    if not _ours[name]:
        return None

    def line(frame, event, arg):
        _lines.setdefault(frame.f_lineno, set()).add(_test[0])
        return line

    return line(frame, event, arg)


if _RECORD and _MODULE:  # set before the tests import anything
    sys.settrace(_trace)
    threading.settrace(_trace)


def pytest_runtest_logstart(nodeid, location):
    _test[0] = nodeid


def pytest_runtest_logreport(report):
    _seconds[report.nodeid] = _seconds.get(report.nodeid, 0.0) + report.duration


def pytest_collection_modifyitems(config, items):
    """Fastest first (as the unmutated run timed them), and only the tests named in ``MUTATE_ONLY``."""
    if _ONLY:
        seen = json.loads(Path(_ONLY).read_text())
        wanted = set(seen["only"]) if seen.get("only") is not None else None
        kept = [item for item in items if wanted is None or item.nodeid in wanted]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = sorted(kept, key=lambda item: seen["seconds"].get(item.nodeid, 0.0))


def pytest_sessionfinish(session):
    if _RECORD:
        lines = {n: sorted(tests) for n, tests in _lines.items()}
        Path(_RECORD).write_text(json.dumps({"lines": lines, "seconds": _seconds}))


def run_tests(root: Path, tests: tuple[str, ...], timeout: float, **env: str) -> tuple[str, float]:
    """``killed``, ``survived`` or ``timeout`` for the copy at ``root``, and the seconds it took."""
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{ROOT / 'scripts'}", "PYTHONDONTWRITEBYTECODE": "1", **env}
    command = [sys.executable, "-m", "pytest", *tests, "-x", "-q", "-p", "no:cacheprovider", "-p", "mutate"]
    began = time.monotonic()
    process = subprocess.Popen(
        command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        code = process.wait(timeout=timeout)
    except BaseException as stop:  # the timeout, Ctrl-C, a kill: the test run ends with it
        os.killpg(process.pid, signal.SIGKILL)  # the test run and anything it started, nothing else
        process.wait()
        if not isinstance(stop, subprocess.TimeoutExpired):
            raise
        return "timeout", time.monotonic() - began
    if code not in (0, 1, 2):  # 1: a test failed, 2: collection failed (the mutant does not import)
        sys.exit(f"pytest exited with {code} on {' '.join(tests)}: not a verdict on a mutant")
    return ("survived" if code == 0 else "killed"), time.monotonic() - began


def copy_project(into: Path) -> None:
    """``engine/`` and ``tests/`` copied (a snapshot: others may edit the working tree meanwhile), everything
    else linked, so the copy finds its data where the project does."""
    for entry in ROOT.iterdir():
        if entry.name in ("engine", "tests"):
            shutil.copytree(entry, into / entry.name, ignore=shutil.ignore_patterns("__pycache__"))
        elif entry.name != ".git":
            (into / entry.name).symlink_to(entry)


def mutate(name: str, target: Target, root: Path, timeout: float | None) -> dict[str, list]:
    path = root / target.module
    original = path.read_bytes()
    found = mutants(original.decode(), target.only)
    record, only = root / ".mutate-record.json", root / ".mutate-only.json"
    status, _ = run_tests(root, target.tests, 3600, MUTATE_RECORD=str(record), MUTATE_MODULE=str(path.resolve()))
    seen = json.loads(record.read_text()) if record.exists() else {}
    if status == "survived":  # the order mutants run them in
        only.write_text(json.dumps({"seconds": seen["seconds"], "only": None}))
        status, seconds = run_tests(root, target.tests, 3600, MUTATE_ONLY=str(only))
    if status != "survived":
        sys.exit(f"{name}: the tests fail on the unmutated code ({' '.join(target.tests)}); fix that first")
    limit = timeout or max(30.0, 4 * seconds)
    print(f"{name}: {len(found)} mutants of {target.module}, tests {seconds:.0f} s, timeout {limit:.0f} s")
    results: dict[str, list] = {"killed": [], "survived": [], "timeout": [], "not run": []}
    try:
        for i, mutant in enumerate(found, 1):
            covering = {t for n in range(mutant.line, mutant.end_line + 1) for t in seen["lines"].get(str(n), ())}
            if not covering:
                status = "not run"  # no test runs this line: it survives without a run
            else:
                path.write_bytes(mutant.apply(original))
                first = None if "*" in covering else sorted(covering)
                rest = sorted(set(seen["seconds"]) - covering) if first else []
                for tests in [first, rest] if rest else [first]:  # the line's tests, then the others
                    only.write_text(json.dumps({"seconds": seen["seconds"], "only": tests}))
                    status, _ = run_tests(root, target.tests, limit, MUTATE_ONLY=str(only))
                    if status != "survived":
                        break
                if not (root / "engine").is_dir():  # a test run is no verdict without the copy it ran on
                    sys.exit(f"{root} was removed while the tests ran; run again")
                path.write_bytes(original)
            results[status].append(mutant)
            print(f"  [{i}/{len(found)}] {status:8} {target.module}:{mutant.line}  {mutant}", flush=True)
    finally:
        path.write_bytes(original)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", metavar="target", help=f"{', '.join(TARGETS)} (default: all)")
    parser.add_argument("--list", action="store_true", help="print the mutants without running the tests")
    parser.add_argument("--tests", nargs="+", help="pytest arguments to run instead of the targets' own")
    parser.add_argument("--timeout", type=float, help="seconds per mutant (default: 4x the unmutated run)")
    parser.add_argument("--fail-under", type=float, default=0, help="exit 1 when a kill rate is below this %%")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped"))  # the copy is removed on the way out
    names = args.targets or list(TARGETS)
    if unknown := set(names) - set(TARGETS):
        parser.error(f"unknown target {sorted(unknown)[0]!r}; choose from {', '.join(TARGETS)}")
    chosen = {name: replace(TARGETS[name], tests=tuple(args.tests or TARGETS[name].tests)) for name in names}
    if args.list:
        for name in names:
            target = chosen[name]
            for mutant in mutants((ROOT / target.module).read_text(), target.only):
                print(f"{target.module}:{mutant.line}  {mutant}")
        return 0
    summary = []
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        copy_project(Path(tmp))
        for name in names:
            summary.append((name, chosen[name], mutate(name, chosen[name], Path(tmp), args.timeout)))
    failed = False
    print("\nkill rate (a timeout counts as killed; a mutant no test runs, as a survivor):")
    for name, target, results in summary:
        survivors = sorted(results["survived"] + results["not run"], key=lambda m: m.start)
        total = sum(map(len, results.values()))
        rate = 100 * (total - len(survivors)) / max(total, 1)
        failed |= rate < args.fail_under
        print(
            f"  {name:10} {rate:5.1f} %  {len(results['killed'])} killed, {len(results['timeout'])} timed out, "
            f"{len(survivors)} survived ({len(results['not run'])} on lines no test runs) of {total}"
        )
        for mutant in survivors:
            note = "  (no test runs it)" if mutant in results["not run"] else ""
            print(f"      {target.module}:{mutant.line}  {mutant}{note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
