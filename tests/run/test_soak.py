"""The archive soak (scripts/soak.py) at 100 files: broken files, a worker killed, the run stopped and resumed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and sends signals")
def test_soak_at_100_files_loses_nothing_and_resumes_equal(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "soak.py"), "--out", str(tmp_path / "soak"),
                           "--files", "100", "--executors", "process", "--no-slope", "--", "debug=tiny"],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert last.startswith("soak: 100 files, 10 bad, lost 0, mixed 0, resume equal yes, peak GB ")
    assert "SIGKILL worker" in proc.stdout and "SIGTERM the run" in proc.stdout  # it was interrupted
