"""`.ci/run` sets CI=true itself and runs exactly the README's test command; the collectors
benchmark fails, not passes, when the Prometheus it measures is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_run_exports_ci_true_and_calls_the_readme_command(tmp_path: Path) -> None:
    """Run the real .ci/run against a stand-in scripts/test that records what it got."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "scripts").mkdir()
    seen = tmp_path / "seen.txt"
    (tmp_path / "scripts" / "test").write_text(f'echo "CI=${{CI:-unset}} args=$#" > "{seen}"\n')
    env = {k: v for k, v in os.environ.items() if k != "CI"}  # as on a CI without CI set
    subprocess.run(["bash", str(tmp_path / ".ci" / "run")], env=env, check=True, timeout=60)
    assert seen.read_text().strip() == "CI=true args=0"
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test" in readme
    assert "\nbash scripts/test\n" in (ROOT / ".ci" / "run").read_text()


def test_bench_collectors_fails_without_prometheus(tmp_path: Path) -> None:
    """Before: 'queries per tick: skipped' and exit 0 when prometheus was not on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bin_dir)}  # no prometheus, no promtool
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_collectors.py"), "--repeat", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "queries per tick: FAILED, prometheus, promtool not installed" in proc.stderr
