"""Scale-out: the worker's jobs run as Ray tasks, on as many GPUs (or CPUs) as the cluster has.

``python -m engine worker --ray <address>`` runs ``serve_ray`` next to the database. This process, the
driver, stays the database's only writer, exactly like the local worker: it holds the worker lock,
claims jobs, heartbeats them and records how they end. Only ``jobs.execute`` runs in the task.

The protocol, per job:

* The driver claims the job, builds its ``RunSpec`` and submits ``_run_task`` (``num_gpus=1`` when the
  cluster has GPUs, else ``num_cpus=1``).
* The task reports through a ``HubSink``: every sink call (candidates, search_done, epoch, progress)
  goes, in order, to one small ``Hub`` actor that the driver created; durable calls are sent at once,
  progress at most every ``EXCHANGE_S``. Each exchange answers whether the job must stop, which is how
  ``should_stop()`` learns of a cancel, a lost job or the driver stopping within a second or so.
* The driver drains the hub several times a second and applies the calls to the store through the
  local worker's ``StoreSink`` (same writes, same lease fencing), heartbeats each job every
  ``HEARTBEAT_S`` and tells the hub to stop a job when the store asks for a cancel.
* The task flushes its last calls before it returns, so once its result is ready the driver has every
  row; the driver then records the end with ``lifecycle.conclude``, as the local worker does: done,
  cancelled, queued again, or failed with ``Type: message``.

Files: the run's folder is on the driver's machine. A task checks whether it can see that folder (a
marker with a token the driver wrote there): on the driver's machine or a shared filesystem it works in
the run folder, so an interrupted training resumes from its last epoch; elsewhere it works in a
temporary folder, and an interrupted training starts again from epoch 1 (the search always resumes, its
candidates are in the database). Either way the task returns the model file's bytes and the driver
writes them atomically into the run folder, checking their sha256, before it records the run as done.

A node started with ``SPIKERNEL_RAY_FOLDER=own`` in its environment works in its own folder even where it
sees the run folder (a shared filesystem too slow to train on). A task lost with its node (the node died, its
worker crashed) puts the job back in the queue; the next node to have room resumes it.

Every node needs the same checkout and Python environment as the driver, at the same path, and the
datasets at the same paths (``$SPIKERNEL_DATA`` and ``$SPIKERNEL_DATA_ROOTS`` are passed on to tasks).

Joining: Ray enables token authentication on a cluster whose head finds a token (``ray start --head``
with ``~/.ray/auth_token``, which ``ray.init`` writes on first use). ``connect`` finds the token as Ray's
clients do (``$RAY_AUTH_TOKEN``, the file in ``$RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``) for any
address, not only ``auto``, and asks the cluster once before joining, so that a refused token reads as one
line that says so, and "no Ray cluster" means that nothing answers at the address.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from engine.core.errors import InputError
from engine.core.files import write_atomic
from engine.core.paths import DATA_ROOT_ENV, DATA_ROOTS_ENV, PROJECT_ROOT
from engine.jobs.execute import CHECKPOINT_NAME, RunSpec, execute, sha256_file
from engine.jobs.lifecycle import HEARTBEAT_S, StoreSink, close_logger, conclude, job_logger, log_attempt, run_spec
from engine.jobs.worker import POLL_S, STALE_S, hold_lock
from engine.store import JobLost, Lease, Store, this_host

RAY_MISSING = "Ray is not installed: pip install -r requirements-ray.txt"
PUMP_S = 0.25  # the driver applies what tasks reported this often
EXCHANGE_S = 0.5  # a task sends progress and asks whether to stop at most this often
SHUTDOWN_WAIT_S = 30.0  # on stop, tasks get this long to return before they are killed
RESOURCES_S = 5.0  # the cluster's size is looked up again this often (nodes come and go)
MARKER = ".ray-driver"  # in a run folder: the token of the driver whose task may work there
SINK_CALLS = ("candidates", "search_done", "epoch", "trained_cell", "progress")
FOLDER_ENV = "SPIKERNEL_RAY_FOLDER"  # "own" on a node: its tasks never work in the run folder
LOSSES = 3  # a job whose task is lost with its node this often in a row fails instead of queueing again
PROBE_S = 10.0  # how long the cluster gets to answer before joining
AUTH_DOCS = "https://docs.ray.io/en/latest/ray-security/token-auth.html"


class RayMissing(InputError):
    """``import ray`` failed; the command line prints the message."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayMissing(RAY_MISSING) from None
    return ray


# ------------------------------------------------------------------------------------- task side


class Hub:
    """A Ray actor (one per driver): tasks post their sink calls here, the driver drains them."""

    def __init__(self) -> None:
        self.inbox: dict[str, list] = {}
        self.stopping: set[str] = set()

    def exchange(self, key: str, calls: list) -> bool:
        """A task's calls since its last exchange; returns whether it must stop."""
        if calls:
            self.inbox.setdefault(key, []).extend(calls)
        return key in self.stopping

    def drain(self) -> dict[str, list]:
        inbox, self.inbox = self.inbox, {}
        return inbox

    def stop(self, key: str) -> None:
        self.stopping.add(key)

    def forget(self, key: str) -> None:
        self.stopping.discard(key)
        self.inbox.pop(key, None)


class HubSink:
    """The task's sink: sink calls travel to the hub in order; a durable one is sent before it returns."""

    def __init__(self, hub, key: str) -> None:
        self.hub, self.key = hub, key
        self.pending: list[tuple[str, tuple]] = []
        self.stopped = False
        self.last = 0.0
        self.lock = threading.Lock()

    def flush(self) -> None:
        import ray

        with self.lock:
            calls, self.pending = self.pending, []
            self.stopped = ray.get(self.hub.exchange.remote(self.key, calls)) or self.stopped
            self.last = time.monotonic()

    def _post(self, name: str, *args, durable: bool = True) -> None:
        with self.lock:
            if not durable and self.pending and self.pending[-1][0] == "progress":
                self.pending[-1] = (name, args)  # only the latest progress matters
            else:
                self.pending.append((name, args))
        if durable or time.monotonic() - self.last >= EXCHANGE_S:
            self.flush()

    def candidates(self, rows, search_seconds):
        self._post("candidates", rows, search_seconds)

    def search_done(self, best, params, params_torch, seconds):
        self._post("search_done", best, params, params_torch, seconds)

    def epoch(self, record):
        self._post("epoch", record)

    def trained_cell(self, row):
        self._post("trained_cell", row)

    def progress(self, stage, done, total, note, eta_seconds):
        self._post("progress", stage, done, total, note, eta_seconds, durable=False)

    def should_stop(self) -> bool:
        if not self.stopped and time.monotonic() - self.last >= EXCHANGE_S:
            self.flush()
        return self.stopped


def _sees(folder: Path, token: str) -> bool:
    """Whether this node sees the driver's run folder (same machine or a shared filesystem) and may work
    there (``SPIKERNEL_RAY_FOLDER=own`` in the node's environment says it may not)."""
    if os.environ.get(FOLDER_ENV, "").strip().lower() == "own":
        return False
    try:
        return (folder / MARKER).read_text() == token
    except OSError:
        return False


def _run_task(spec: RunSpec, key: str, hub, token: str) -> dict:
    """The Ray task: run the job, report through the hub, return the results and the model's bytes."""
    import ray

    shared = _sees(Path(spec.folder), token)
    work = Path(spec.folder) if shared else Path(tempfile.mkdtemp(prefix="spikernel-"))
    sink = HubSink(hub, key)
    try:
        result = execute(replace(spec, folder=str(work)), sink)
        sink.flush()  # every call reaches the hub before the result is ready
        saved = result is not None and "checkpoint_sha256" in result  # a study's run keeps no model
        checkpoint = (work / CHECKPOINT_NAME).read_bytes() if saved else None
        return {"result": result, "checkpoint": checkpoint, "node": ray.util.get_node_ip_address(), "shared": shared}
    except BaseException:
        try:
            sink.flush()  # what was found before the failure is kept
        except Exception:
            pass
        raise
    finally:
        if not shared:
            shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------------- driver side


@dataclass
class _Running:
    lease: Lease
    sink: StoreSink
    spec: RunSpec
    key: str
    ref: object
    beat: float = field(default_factory=time.monotonic)
    failure: Exception | None = None  # applying a reported call failed: the job fails with this
    stop_sent: bool = False


class RayDriver:
    """Claims jobs while the cluster has room, runs each as a Ray task and records what it reports."""

    def __init__(self, store: Store, ray, *, stale_after: float, stop: threading.Event) -> None:
        self.store, self.ray, self.stale_after, self.stop = store, ray, stale_after, stop
        self.name = f"{this_host()}:{os.getpid()}"
        self.token = uuid.uuid4().hex
        node = ray.get_runtime_context().get_node_id()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # The hub lives beside the driver (its calls stay local; losing another node never loses it) and takes
        # no CPU from the tasks. Strictly: a soft affinity may place it on a node with free CPUs instead.
        self.hub = (
            ray.remote(num_cpus=0)(Hub)
            .options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
            .remote()
        )
        self.task = ray.remote(max_retries=0)(_run_task)
        self.running: dict[str, _Running] = {}
        self._slots, self._slots_at = (0, "cpu"), -RESOURCES_S
        self._warned = False
        self.losses: dict[int, int] = {}  # job id: its tasks lost in a row with their node

    # --- capacity and claiming

    def slots(self) -> tuple[int, str]:
        """How many jobs the cluster runs at once, and on what: one per GPU, else one per CPU."""
        if time.monotonic() - self._slots_at >= RESOURCES_S:
            total = self.ray.cluster_resources()
            gpus, cpus = int(total.get("GPU", 0)), int(total.get("CPU", 0))
            self._slots = (min(gpus, cpus), "cuda") if gpus else (cpus, "cpu")
            self._slots_at = time.monotonic()
        return self._slots

    def fill(self) -> None:
        count, device = self.slots()
        if count == 0 and not self._warned:
            self.store.log("the Ray cluster has no CPU or GPU for tasks yet; waiting for nodes", level="warning")
            self._warned = True
        while len(self.running) < count and not self.stop.is_set():
            lease = self.store.claim(self.name, f"ray:{device}", stale_after=self.stale_after)
            if lease is None:
                return
            self.submit(lease, device)

    def submit(self, lease: Lease, device: str) -> None:
        logger = job_logger(self.store, lease.job_id)
        sink = StoreSink(self.store, lease, logger, self.stop)
        sink.state = {**sink.state, "note": "waiting for a Ray worker"}
        key = f"{lease.job_id}:{lease.attempt}"
        try:
            spec = run_spec(self.store, lease, device)
            if device == "cuda" and spec.device.startswith("cuda"):
                spec = replace(spec, device="cuda")  # the task sees only the GPU Ray gave it
            folder = Path(spec.folder)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / MARKER).write_text(self.token)
            options = {"num_cpus": 1, "num_gpus": 1} if device == "cuda" else {"num_cpus": 1}
            ref = self.task.options(**options, name=f"spikernel-job-{lease.job_id}").remote(
                spec, key, self.hub, self.token
            )
        except Exception as e:
            conclude(self.store, lease, sink, _raiser(e))
            close_logger(logger)
            return
        log_attempt(logger, lease, spec, ", Ray task")
        self.running[key] = _Running(lease, sink, spec, key, ref)

    # --- what tasks report, heartbeats, cancels

    def pump(self) -> None:
        """Apply every call the tasks reported since the last pump, in order."""
        for key, calls in self.ray.get(self.hub.drain.remote()).items():
            job = self.running.get(key)
            if job is None:
                continue
            for name, args in calls:
                if job.failure is not None or job.sink.lost.is_set() or name not in SINK_CALLS:
                    break
                try:
                    getattr(job.sink, name)(*args)
                except JobLost:
                    job.sink.lost.set()  # the job stops; conclude leaves it alone
                except Exception as e:
                    job.failure = e  # the job stops and fails with this

    def beat(self) -> None:
        now = time.monotonic()
        for job in self.running.values():
            if now - job.beat >= HEARTBEAT_S:
                job.sink.beat()
                job.beat = now
            if not job.stop_sent and (job.failure is not None or job.sink.should_stop()):
                self.hub.stop.remote(job.key)
                job.stop_sent = True

    # --- ends

    def reap(self, timeout: float) -> None:
        """Wait up to ``timeout`` for tasks to end, then record how each ended."""
        refs = [job.ref for job in self.running.values()]
        if not refs:
            self.stop.wait(timeout)
            return
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=timeout)
        if not ready:
            return
        self.pump()  # the tasks flushed before returning: their last calls are in the hub
        done = set(ready)
        for job in list(self.running.values()):
            if job.ref in done:
                self.settle(job, lambda job=job: self.collect(job))

    def collect(self, job: _Running) -> tuple[str, dict | None]:
        """The ended task's outcome; writes its model into the run folder. Raises what the task raised."""
        if job.failure is not None:
            raise job.failure
        try:
            out = self.ray.get(job.ref)
        except self.ray.exceptions.RayTaskError as e:
            cause = e.cause
            cause.add_note(str(e))  # the task's own traceback, for the job's log
            raise cause from None
        except self.ray.exceptions.RayError as e:  # the task is lost, not failed: its node or worker died
            lost = self.losses.get(job.lease.job_id, 0) + 1
            self.losses[job.lease.job_id] = lost
            if lost >= LOSSES:
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            job.sink.logger.warning("the Ray task was lost (%s: %s); queued again", type(e).__name__, first)
            return job.spec.folder, None  # conclude queues it again: the search resumes, the training too
        self.losses.pop(job.lease.job_id, None)
        result = out["result"]
        if out["checkpoint"] is not None:
            data = out["checkpoint"]
            if hashlib.sha256(data).hexdigest() != result["checkpoint_sha256"]:
                raise RuntimeError("the model file changed on its way from the task to the driver")
            path = Path(job.spec.folder) / CHECKPOINT_NAME
            write_atomic(path, data)
            if sha256_file(path) != result["checkpoint_sha256"]:
                raise RuntimeError(f"the model file written to {path} does not match the task's")
        if result is not None:
            job.sink.logger.info("ran on %s (%s)", out["node"], "shared folder" if out["shared"] else "own folder")
        return job.spec.folder, result

    def settle(self, job: _Running, attempt) -> str:
        del self.running[job.key]
        try:
            return conclude(self.store, job.lease, job.sink, attempt)
        finally:
            self.hub.forget.remote(job.key)
            close_logger(job.sink.logger)
            (Path(job.spec.folder) / MARKER).unlink(missing_ok=True)

    def step(self) -> None:
        self.pump()
        self.beat()
        self.reap(PUMP_S if self.running else POLL_S)

    def serve(self, idle_exit: float | None) -> None:
        idle_since = time.monotonic()
        try:
            while not self.stop.is_set():
                self.fill()
                self.step()
                if self.running:
                    idle_since = time.monotonic()
                elif idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                    if self.store.active_jobs() == 0:
                        break
                    idle_since = time.monotonic()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop every task (each job goes back to the queue) and wait for them; kill those that hang."""
        self.stop.set()
        deadline = time.monotonic() + SHUTDOWN_WAIT_S
        while self.running and time.monotonic() < deadline:
            self.step()
        for job in list(self.running.values()):
            self.ray.cancel(job.ref, force=True)
            self.settle(job, lambda job=job: (job.spec.folder, None))


def _raiser(error: Exception):
    def attempt():
        raise error

    return attempt


class RayAuthFailed(InputError):
    """The cluster answered but refused this process: its token authentication wants another token."""


def _token_source() -> str | None:
    """Where Ray's clients take the token from, in Ray's order of precedence (None: nowhere)."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "$RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return os.environ["RAY_AUTH_TOKEN_PATH"]
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


def use_token_if_found() -> None:
    """Token authentication on for this process when a token is found and ``RAY_AUTH_MODE`` is unset: what
    ``ray.init`` does for a cluster it finds on this machine, done for any address (Ray's own function)."""
    try:
        from ray._private.authentication import authentication_token_setup as setup
    except ImportError:  # a Ray without token authentication
        return
    log = logging.getLogger(setup.__name__)
    level = log.level
    log.setLevel(logging.ERROR)  # its "enabled for this Ray cluster" warning is meant for a head node
    try:
        setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def _quiet_stderr():
    """Ray's C++ client logs each refused call to the process's stderr; the refusal is said in one line."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _resolve(address: str) -> str | None:
    """The head's host:port for ``address`` ('auto': the cluster this machine joined), None if unknown."""
    if address != "auto":
        return address
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address("auto")
    except Exception:  # no cluster here: ray.init says so
        return None


def probe(ray, address: str) -> None:
    """Ask the cluster at ``address`` (host:port) once, before joining: raises InputError when nothing
    answers there and RayAuthFailed when it refuses this process's token (or its lack of one)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_S):
            pass
    except ValueError:
        raise InputError(
            f"{address!r} is not a Ray cluster address; use auto, local or a head node's host:port"
        ) from None
    except OSError as e:
        raise InputError(
            f"no Ray cluster at {address!r} (nothing answers: {e.strerror or e}); "
            "start one with `ray start --head`, or use --ray local"
        ) from None
    try:
        from ray._raylet import GcsClient
    except ImportError:
        return
    try:
        with _quiet_stderr():
            GcsClient(address=address).internal_kv_get(b"session_name", b"session", timeout=PROBE_S)
    except ray.exceptions.AuthenticationError:
        source = _token_source()
        mode = os.environ.get("RAY_AUTH_MODE", "")
        if mode.lower() not in ("", "token"):
            why = f"it requires a token and RAY_AUTH_MODE={mode} here turns tokens off; unset it"
        elif source is None:
            why = "it requires a token and this machine has none"
        else:
            why = f"it refused the token from {source}"
        raise RayAuthFailed(
            f"Ray cluster at {address!r}: authentication failed, {why}. The head's token is in "
            f"~/.ray/auth_token on the head (`ray get-auth-token` prints it); copy it to ~/.ray/auth_token on "
            f"this machine and on every node (nodes join with RAY_AUTH_MODE=token ray start --address=...), "
            f"see {AUTH_DOCS}"
        ) from None
    except Exception:  # anything else: ray.init has the last word
        pass


def connect(ray, address: str, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` ('auto': the one this machine belongs to; 'local': a new one here).

    A token Ray's clients would find (``$RAY_AUTH_TOKEN``, ``$RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``)
    is used for any address; the cluster is asked once first, so that a refusal reads as one line.
    """
    env = {k: os.environ[k] for k in (DATA_ROOT_ENV, DATA_ROOTS_ENV) if k in os.environ}
    env["PYTHONPATH"] = str(PROJECT_ROOT)  # tasks import this checkout's engine
    kwargs: dict = {"runtime_env": {"env_vars": env}}
    head = None
    if address == "local":
        kwargs.update(num_cpus=num_cpus, include_dashboard=False)
    else:
        use_token_if_found()
        head = _resolve(address)
        if head is not None:
            probe(ray, head)
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as e:
        if head is not None:  # it answered a moment ago
            raise InputError(f"cannot join the Ray cluster at {head!r}: {e}") from None
        raise InputError(
            f"no Ray cluster at {address!r} ({e}); start one with `ray start --head`, or use --ray local"
        ) from None
    except ValueError as e:  # Ray's word for an address it cannot parse
        raise InputError(
            f"{address!r} is not a Ray cluster address ({e}); use auto, local or a head node's host:port"
        ) from None
    except ray.exceptions.AuthenticationError as e:
        raise RayAuthFailed(f"Ray cluster at {address!r}: authentication failed ({e}); see {AUTH_DOCS}") from None


def serve_ray(
    store: Store,
    *,
    address: str = "auto",
    stale_after: float = STALE_S,
    idle_exit: float | None = None,
    stop: threading.Event | None = None,
    num_cpus: int | None = None,
    on_ready=None,
) -> None:
    """Serve the store's queue with Ray tasks until ``stop`` is set or, with ``idle_exit``, after that
    long without work. Jobs that are running when it stops go back to the queue. ``on_ready`` is called
    with the cluster's resources once the connection holds (the command line says it is serving then).

    ``address`` is a Ray cluster address, 'auto' (the cluster this machine joined with ``ray start``) or
    'local' (a private cluster of this machine, with ``num_cpus`` CPUs). When Ray is already initialised
    in this process its connection is used and left open.
    """
    ray = import_ray()
    stop = stop or threading.Event()
    with hold_lock(store):  # before Ray starts: a second worker fails at once
        owned = not ray.is_initialized()
        if owned:
            connect(ray, address, num_cpus)
        name = f"{this_host()}:{os.getpid()}"
        try:
            store.requeue_orphans(this_host(), alive=name)
            total = ray.cluster_resources()
            store.log(f"ray worker {name} started: {int(total.get('CPU', 0))} CPU, {int(total.get('GPU', 0))} GPU")
            if on_ready is not None:
                on_ready(total)
            RayDriver(store, ray, stale_after=stale_after, stop=stop).serve(idle_exit)
            store.log(f"ray worker {name} stopped")
        finally:
            if owned:
                ray.shutdown()
