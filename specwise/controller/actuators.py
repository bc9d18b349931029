"""Applying a recommended k: dry-run (default), a file per class, or a command.

vLLM cannot change k at runtime: a new k means a restart with a new ``--speculative-config``.
So an actuator never restarts anything itself unless told how (the command actuator), and
every attempt, success or failure, is recorded for the exporter and ``/recommendations``.

The dry-run and file actuators answer at once. The command actuator starts its run in the
background, in a process group of its own, and answers ``pending``; the controller collects
the outcome with :meth:`CommandActuator.poll` on a later tick and waits for (or kills) what
is still running with :meth:`CommandActuator.close` when it stops.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from specwise.errors import ActuatorError, ConfigError
from specwise.policies.off import speculative_config_for  # k = 0 lives there

__all__ = [
    "ActuationResult",
    "Actuator",
    "CommandActuator",
    "DryRunActuator",
    "FileActuator",
    "PollingActuator",
    "speculative_config_for",
    "write_atomically",
]

log = logging.getLogger("specwise.actuators")
_OUTPUT_LIMIT = 4000
DEFAULT_FILE_MODE = 0o644


@dataclass(frozen=True)
class ActuationResult:
    """What one attempt did: ``applied`` is False for a dry run, a refusal or a failure.

    ``pending`` is True when a command was started in the background and its outcome is not
    known yet (it arrives later from ``poll``); ``error`` holds the one-sentence failure of a
    finished background run; ``at`` is when the attempt started.
    """

    class_name: str
    k: int
    applied: bool
    at: float
    detail: str
    exit_status: int | None = None
    output: str = ""
    pending: bool = False
    error: str = ""

    @property
    def last_line(self) -> str:
        """The last non-empty line the command printed ("" if none)."""
        lines = self.output.strip().splitlines()
        return lines[-1].strip() if lines else ""


class Actuator(Protocol):
    kind: str

    def apply(
        self,
        class_name: str,
        k: int,
        *,
        speculative_config: Mapping[str, Any] | None,
        reason: str,
        now: float,
    ) -> ActuationResult:
        """Apply k for a class, or raise ActuatorError naming what failed."""
        ...


@runtime_checkable
class PollingActuator(Protocol):
    """An actuator whose runs finish after ``apply`` returned (``pending`` results).

    ``poll`` returns the runs that finished since the last call (each result once, never
    blocking); ``close`` waits up to ``timeout`` seconds (None: the actuator's own bound) for
    runs in flight, kills what is left, and returns every outcome not yet polled.
    """

    def poll(self, now: float) -> list[ActuationResult]: ...

    def close(self, timeout: float | None = None) -> list[ActuationResult]: ...


def write_atomically(path: Path, text: str, *, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` so a reader sees the old file or the new one, never half.

    The bytes go to a temporary file in the same folder, are flushed to disk, then renamed
    over the target (atomic on POSIX); an interrupted write leaves only the temporary file,
    which is removed on failure. The file gets ``mode`` exactly (the umask does not apply);
    None keeps the temporary file's 0600 (owner only).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _safe_name(class_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", class_name).strip(".") or "class"


class DryRunActuator:
    """Log and export only (the default): a human or a pipeline acts on the recommendation."""

    kind = "dry-run"

    def apply(
        self,
        class_name: str,
        k: int,
        *,
        speculative_config: Mapping[str, Any] | None,
        reason: str,
        now: float,
    ) -> ActuationResult:
        flag = (
            "(no --speculative-config)"
            if speculative_config is None
            else json.dumps(dict(speculative_config), sort_keys=True)
        )
        log.info("dry-run: class %s would run k = %d %s: %s", class_name, k, flag, reason)
        return ActuationResult(class_name, k, False, now, f"dry-run: would set k = {k}")


class FileActuator:
    """Writes ``<dir>/<class>.json`` with the recommended speculative config, atomically.

    A deployment tool (or the simulator) picks the file up and restarts vLLM with
    ``--speculative-config "$(jq -c .speculative_config <class>.json)"``; a null
    ``speculative_config`` means start without speculation. Files get ``mode`` (default
    0644, ``[actuator] file_mode``) so a deploy tool running as another user can read them.
    """

    kind = "file"

    def __init__(self, directory: Path, *, mode: int = DEFAULT_FILE_MODE) -> None:
        if not 0 <= mode <= 0o777:
            raise ConfigError(
                f"file mode {mode:#o} is not a permission mode; use one such as 0o644",
                field="[actuator] file_mode",
            )
        self.directory = directory
        self.mode = mode

    def path_for(self, class_name: str) -> Path:
        return self.directory / f"{_safe_name(class_name)}.json"

    def apply(
        self,
        class_name: str,
        k: int,
        *,
        speculative_config: Mapping[str, Any] | None,
        reason: str,
        now: float,
    ) -> ActuationResult:
        path = self.path_for(class_name)
        document = {
            "class": class_name,
            "num_speculative_tokens": k,
            "speculative_config": None if speculative_config is None else dict(speculative_config),
            "reason": reason,
            "generated_at": now,
        }
        try:
            write_atomically(
                path, json.dumps(document, indent=2, sort_keys=True) + "\n", mode=self.mode
            )
        except OSError as exc:
            raise ActuatorError(
                f"cannot write {path} ({exc.strerror}); check that [actuator] dir exists and is "
                "writable"
            ) from exc
        # a class-wide config supersedes the canary files of the class (probes, #15)
        for stale in self.directory.glob(f"{_safe_name(class_name)}@*.json"):
            stale.unlink(missing_ok=True)
        return ActuationResult(class_name, k, True, now, f"wrote {path}")

    # one replica (a canary probe, #15)
    def path_for_instance(self, class_name: str, instance: str) -> Path:
        return self.directory / f"{_safe_name(class_name)}@{_safe_name(instance)}.json"

    def apply_instance(
        self,
        class_name: str,
        instance: str,
        k: int,
        *,
        speculative_config: Mapping[str, Any] | None,
        reason: str,
        now: float,
        engine: str = "",
    ) -> ActuationResult:
        """Writes ``<dir>/<class>@<instance>.json``: for that replica it overrides
        ``<class>.json`` until the next class-wide config (which removes it)."""
        path = self.path_for_instance(class_name, instance)
        document = {
            "class": class_name,
            "instance": instance,
            "engine": engine,
            "num_speculative_tokens": k,
            "speculative_config": None if speculative_config is None else dict(speculative_config),
            "reason": reason,
            "generated_at": now,
        }
        try:
            write_atomically(
                path, json.dumps(document, indent=2, sort_keys=True) + "\n", mode=self.mode
            )
        except OSError as exc:
            raise ActuatorError(
                f"cannot write {path} ({exc.strerror}); check that [actuator] dir exists and is "
                "writable"
            ) from exc
        return ActuationResult(class_name, k, True, now, f"wrote {path}")


_PLACEHOLDER = re.compile(r"\{(class|k|speculative_config|instance|engine)\}")
_K_LIMIT = 64  # the highest k the config accepts ([policy] k_max)
_GROUP_POLL_SECONDS = 0.02
_SIGKILL_WAIT_SECONDS = 5.0
_SCHEDULE_KEY = "num_speculative_tokens_per_batch_size"


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``; read from /proc on Linux."""
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(os.path.join(entry.path, "stat"), encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:  # exited while we looked
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:  # a member changed user: nothing more we can do
        log.error("cannot send %s to process group %d: %s", sig.name, pgid, exc)


def _wait_group_gone(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """Reap the leader and wait (bounded) until no member of its group is alive."""
    deadline = time.monotonic() + seconds
    while True:
        proc.poll()
        if not _group_members(proc.pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_GROUP_POLL_SECONDS)


def _tail(handle: IO[bytes]) -> str:
    handle.flush()
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - _OUTPUT_LIMIT))
    return handle.read().decode("utf-8", errors="replace")


@dataclass
class _Run:
    class_name: str
    k: int
    at: float
    argv0: str
    proc: subprocess.Popen[bytes]
    output: IO[bytes]
    kill: threading.Event
    started: float
    thread: threading.Thread | None = None


class CommandActuator:
    """Runs a configured argv (no shell) with ``{class}``, ``{k}`` and ``{speculative_config}``
    substituted, in the background, at most one run per class at a time and at most one start
    per ``min_interval`` per class; records exit status and output.

    Only declared class names are substituted (``classes``); k must be a whole number from 0
    to ``k_max``; the speculative config must be a JSON table (or None, for k = 0, which
    substitutes an empty argument). Each run gets a new session and process group; past
    ``timeout`` seconds the whole group gets SIGTERM, then SIGKILL after ``kill_grace``.
    """

    kind = "command"

    def __init__(
        self,
        argv: Sequence[str],
        *,
        classes: Collection[str],
        k_max: int = _K_LIMIT,
        min_interval: float = 600.0,
        timeout: float = 300.0,
        kill_grace: float = 10.0,
        popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ConfigError(
                "the command actuator needs an argv list of strings", field="[actuator] argv"
            )
        for name in classes:
            if not name or name.startswith("-") or any(ord(ch) < 32 for ch in name):
                raise ConfigError(
                    f"class name {name!r} cannot be passed to the actuator command (empty, "
                    "starts with '-' or holds control characters); rename the class",
                    field="[[classes]] name",
                )
        self.argv = tuple(argv)
        self.classes = frozenset(classes)
        self.k_max = k_max
        self.min_interval = min_interval
        self.timeout = timeout
        self.kill_grace = kill_grace
        self._popen = popen
        self._monotonic = monotonic  # measures ``timeout`` (tests pass a clock they move)
        self._last_run: dict[str, float] = {}
        self._runs: dict[str, _Run] = {}
        self._done: queue.SimpleQueue[ActuationResult] = queue.SimpleQueue()
        self._lock = threading.Lock()

    # --------------------------------------------------------------------- validation
    def _spec_argument(
        self, class_name: str, k: int, speculative_config: Mapping[str, Any] | None
    ) -> str:
        if speculative_config is None:
            if k > 0:
                raise ActuatorError(
                    f"class {class_name!r}: k = {k} needs a speculative config, got none; "
                    "refusing to run the actuator command"
                )
            return ""
        where = f"class {class_name!r}: the speculative config"
        if not isinstance(speculative_config, Mapping) or not all(
            isinstance(key, str) for key in speculative_config
        ):
            raise ActuatorError(f"{where} {speculative_config!r} is not a table with text keys")
        n = speculative_config.get("num_speculative_tokens")
        if n is not None and (
            isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= _K_LIMIT
        ):
            raise ActuatorError(
                f"{where} has num_speculative_tokens = {n!r}; it must be a whole number from "
                f"1 to {_K_LIMIT}"
            )
        if _SCHEDULE_KEY not in speculative_config:
            if k == 0:
                raise ActuatorError(
                    f"{where} is {dict(speculative_config)!r} for k = 0; k = 0 takes none (an "
                    "empty argument) unless it carries a per-batch-size schedule"
                )
            if n != k:
                raise ActuatorError(
                    f"{where} has num_speculative_tokens = {n!r} for k = {k}; they must agree"
                )
        try:
            return json.dumps(dict(speculative_config), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ActuatorError(f"{where} cannot be written as JSON ({exc})") from exc

    def render(
        self,
        class_name: str,
        k: int,
        speculative_config: Mapping[str, Any] | None,
        *,
        instance: str = "",
        engine: str = "",
    ) -> list[str]:
        """The argv for one run; ActuatorError if a substituted value is not allowed.

        ``{instance}`` and ``{engine}`` name the one replica of a canary probe (#15); they
        are empty for a change of the whole class."""
        for what, value in (("instance", instance), ("engine", engine)):
            if value.startswith("-") or any(ord(ch) < 32 for ch in value):
                raise ActuatorError(
                    f"class {class_name!r}: {what} {value!r} cannot be passed to the actuator "
                    "command (starts with '-' or holds control characters)"
                )
        if class_name not in self.classes:
            raise ActuatorError(
                f"class {class_name!r} is not declared in [[classes]]; the command actuator "
                "runs only for declared classes"
            )
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= self.k_max:
            raise ActuatorError(
                f"class {class_name!r}: k = {k!r} is not a whole number from 0 to "
                f"{self.k_max}; refusing to run the actuator command"
            )
        values = {
            "class": class_name,
            "k": str(k),
            "speculative_config": self._spec_argument(class_name, k, speculative_config),
            "instance": instance,
            "engine": engine,
        }
        return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], a) for a in self.argv]

    # --------------------------------------------------------------------- runs
    def running(self) -> dict[str, int]:
        """Classes with a run in flight, and the pid (= process group) of each."""
        with self._lock:
            return {name: run.proc.pid for name, run in self._runs.items()}

    def apply(
        self,
        class_name: str,
        k: int,
        *,
        speculative_config: Mapping[str, Any] | None,
        reason: str,
        now: float,
    ) -> ActuationResult:
        """Start the command in the background and answer ``pending`` (or refuse)."""
        return self._start(class_name, k, self.render(class_name, k, speculative_config), now)

    def apply_instance(
        self,
        class_name: str,
        instance: str,
        k: int,
        *,
        speculative_config: Mapping[str, Any] | None,
        reason: str,
        now: float,
        engine: str = "",
    ) -> ActuationResult:
        """One replica (a canary probe, #15): ``{instance}`` and ``{engine}`` name it; the
        same limits hold (one run per class at a time, ``min_interval``)."""
        argv = self.render(class_name, k, speculative_config, instance=instance, engine=engine)
        return self._start(class_name, k, argv, now)

    def _start(self, class_name: str, k: int, argv: list[str], now: float) -> ActuationResult:
        with self._lock:
            busy = self._runs.get(class_name)
            if busy is not None:
                return ActuationResult(
                    class_name,
                    k,
                    False,
                    now,
                    f"refused: the run for k = {busy.k} (pid {busy.proc.pid}) is still in "
                    "flight; one run per class at a time",
                )
            last = self._last_run.get(class_name)
            if last is not None and now - last < self.min_interval:
                wait = self.min_interval - (now - last)
                return ActuationResult(
                    class_name, k, False, now, f"rate-limited: next run allowed in {wait:.0f} s"
                )
            self._last_run[class_name] = now
            output = tempfile.TemporaryFile()  # noqa: SIM115 (the watcher thread closes it)
            try:
                proc = self._popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            except FileNotFoundError as exc:
                output.close()
                raise ActuatorError(
                    f"actuator command {argv[0]!r} was not found; fix [actuator] argv"
                ) from exc
            except (OSError, ValueError) as exc:
                output.close()
                raise ActuatorError(
                    f"actuator command {argv[0]!r} could not start ({exc}); fix [actuator] argv"
                ) from exc
            run = _Run(
                class_name, k, now, argv[0], proc, output, threading.Event(), self._monotonic()
            )
            run.thread = threading.Thread(
                target=self._watch, args=(run,), name=f"specwise-actuator-{class_name}"
            )
            try:
                run.thread.start()
            except RuntimeError as exc:  # no thread to watch it: do not leave it running
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
                output.close()
                raise ActuatorError(
                    f"actuator command {argv[0]!r} for class {class_name!r} was stopped: "
                    f"cannot watch it ({exc}); the controller is short of threads"
                ) from exc
            self._runs[class_name] = run
        log.info("class %s: started %s (pid %d) for k = %d", class_name, argv[0], proc.pid, k)
        return ActuationResult(
            class_name,
            k,
            False,
            now,
            f"started {argv[0]} (pid {proc.pid}); its outcome is recorded when it exits",
            pending=True,
        )

    def _watch(self, run: _Run) -> None:
        """Wait for one run (bounded), kill its group on timeout or shutdown, queue the result."""
        try:
            result = self._wait(run)
        except BaseException as exc:  # never leave a class stuck "in flight"
            _signal_group(run.proc.pid, signal.SIGKILL)
            result = ActuationResult(
                run.class_name,
                run.k,
                False,
                run.at,
                "",
                error=f"actuator command {run.argv0!r} for class {run.class_name!r}: watching "
                f"it failed ({exc!r}); its process group was killed",
            )
        finally:
            run.output.close()
        with self._lock:
            self._done.put(result)
            del self._runs[run.class_name]

    def _wait(self, run: _Run) -> ActuationResult:
        proc, name, k = run.proc, run.class_name, run.k
        deadline = run.started + self.timeout
        stopped_by = ""
        while True:
            try:
                status = proc.wait(timeout=max(0.0, min(0.2, deadline - self._monotonic())))
                break
            except subprocess.TimeoutExpired:
                if run.kill.is_set():
                    stopped_by = "was still running when the controller stopped"
                elif self._monotonic() >= deadline:
                    stopped_by = f"ran past {self.timeout:g} s"
                if stopped_by:
                    break
        survivors: list[int] = []
        if stopped_by:
            _signal_group(proc.pid, signal.SIGTERM)
            if not _wait_group_gone(proc, self.kill_grace):
                _signal_group(proc.pid, signal.SIGKILL)
                _wait_group_gone(proc, _SIGKILL_WAIT_SECONDS)
                survivors = _group_members(proc.pid)
            status = proc.wait(timeout=_SIGKILL_WAIT_SECONDS)
        output = _tail(run.output)
        lines = output.strip().splitlines()
        last = lines[-1].strip()[-300:] if lines else "no output"
        who = f"actuator command {run.argv0!r} for class {name!r} (k = {k})"
        if stopped_by:
            left = ""
            if survivors:
                left = f"; {len(survivors)} process(es) of its group survived SIGKILL"
            fix = (
                "raise [actuator] timeout or make the command faster"
                if "ran past" in stopped_by
                else "it is retried after the controller starts again"
            )
            error = f"{who} {stopped_by} and was killed with its process group{left}; {fix}"
        elif status < 0:
            error = f"{who} was killed by signal {-status}: {last}"
        elif status != 0:
            error = f"{who} exited with status {status}: {last}"
        else:
            return ActuationResult(name, k, True, run.at, f"ran {run.argv0}", status, output)
        return ActuationResult(name, k, False, run.at, "", status, output, error=error)

    def poll(self, now: float) -> list[ActuationResult]:
        """The runs that finished since the last call, oldest first (never blocks)."""
        out: list[ActuationResult] = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def close(self, timeout: float | None = None) -> list[ActuationResult]:
        """Wait up to ``timeout`` s (None: each run's own timeout) for runs in flight, kill
        the groups still running, and return every outcome not yet polled."""
        with self._lock:
            runs = list(self._runs.values())
        bound = self.timeout + self.kill_grace + 2 * _SIGKILL_WAIT_SECONDS
        wait = bound if timeout is None else max(0.0, timeout)
        if runs and wait > 0:
            log.warning(
                "waiting up to %.0f s for the actuator command for %s to end; it is killed "
                "with its process group after that",
                wait,
                ", ".join(f"class {r.class_name} (pid {r.proc.pid})" for r in runs),
            )
        deadline = time.monotonic() + wait
        for run in runs:
            if run.thread is not None:
                run.thread.join(max(0.0, deadline - time.monotonic()))
        for run in runs:
            run.kill.set()
        for run in runs:
            if run.thread is not None:
                run.thread.join(self.kill_grace + 2 * _SIGKILL_WAIT_SECONDS + 1.0)
        return self.poll(math.nan)
