"""Applying a recommended k: dry-run (default), a file per class, or a command.

vLLM cannot change k at runtime: a new k means a restart with a new ``--speculative-config``.
So an actuator never restarts anything itself unless told how (the command actuator), and
every attempt, success or failure, is recorded for the exporter and ``/recommendations``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from specwise.errors import ActuatorError, ConfigError
from specwise.policies.off import speculative_config_for  # k = 0 lives there

__all__ = [
    "ActuationResult",
    "Actuator",
    "CommandActuator",
    "DryRunActuator",
    "FileActuator",
    "speculative_config_for",
    "write_atomically",
]

log = logging.getLogger("specwise.actuators")
_OUTPUT_LIMIT = 4000


@dataclass(frozen=True)
class ActuationResult:
    """What one attempt did: ``applied`` is False for a dry run or a failure."""

    class_name: str
    k: int
    applied: bool
    at: float
    detail: str
    exit_status: int | None = None
    output: str = ""


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


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a reader sees the old file or the new one, never half.

    The bytes go to a temporary file in the same folder, are flushed to disk, then renamed
    over the target (atomic on POSIX); an interrupted write leaves only the temporary file,
    which is removed on failure.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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
    ``speculative_config`` means start without speculation.
    """

    kind = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

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
            write_atomically(path, json.dumps(document, indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            raise ActuatorError(
                f"cannot write {path} ({exc.strerror}); check that [actuator] dir exists and is "
                "writable"
            ) from exc
        return ActuationResult(class_name, k, True, now, f"wrote {path}")


class CommandActuator:
    """Runs a configured argv (no shell) with ``{class}``, ``{k}`` and ``{speculative_config}``
    substituted, at most once per ``min_interval`` per class; records exit status and output."""

    kind = "command"

    def __init__(
        self,
        argv: Sequence[str],
        *,
        min_interval: float = 600.0,
        timeout: float = 300.0,
        run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
    ) -> None:
        if not argv:
            raise ConfigError("the command actuator needs an argv list", field="[actuator] argv")
        self.argv = tuple(argv)
        self.min_interval = min_interval
        self.timeout = timeout
        self._run = run
        self._last_run: dict[str, float] = {}

    def render(
        self, class_name: str, k: int, speculative_config: Mapping[str, Any] | None
    ) -> list[str]:
        spec = (
            ""
            if speculative_config is None
            else json.dumps(dict(speculative_config), sort_keys=True)
        )
        values = {"class": class_name, "k": str(k), "speculative_config": spec}
        return [
            re.sub(r"\{(class|k|speculative_config)\}", lambda m: values[m.group(1)], a)
            for a in self.argv
        ]

    def apply(
        self,
        class_name: str,
        k: int,
        *,
        speculative_config: Mapping[str, Any] | None,
        reason: str,
        now: float,
    ) -> ActuationResult:
        last = self._last_run.get(class_name)
        if last is not None and now - last < self.min_interval:
            wait = self.min_interval - (now - last)
            return ActuationResult(
                class_name, k, False, now, f"rate-limited: next run allowed in {wait:.0f} s"
            )
        argv = self.render(class_name, k, speculative_config)
        self._last_run[class_name] = now
        try:
            done = self._run(
                argv, capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except FileNotFoundError as exc:
            raise ActuatorError(
                f"actuator command {argv[0]!r} was not found; fix [actuator] argv"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise ActuatorError(
                f"actuator command {argv[0]!r} for class {class_name!r} ran past "
                f"{self.timeout:g} s "
                "and was killed; raise [actuator] timeout or make the command faster"
            ) from exc
        except OSError as exc:
            raise ActuatorError(f"actuator command {argv[0]!r} could not start ({exc})") from exc
        output = ((done.stdout or "") + (done.stderr or ""))[-_OUTPUT_LIMIT:]
        if done.returncode != 0:
            raise ActuatorError(
                f"actuator command {argv[0]!r} for class {class_name!r} (k = {k}) exited with "
                f"status {done.returncode}: {output.strip()[-300:] or 'no output'}"
            )
        return ActuationResult(class_name, k, True, now, f"ran {argv[0]}", done.returncode, output)
