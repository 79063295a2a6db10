"""The commands a person types: demo, doctor, --version."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.conftest import command


def run(args: list[str], home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"HOME": str(home), "PATH": os.environ.get("PATH", "")}
    return subprocess.run(
        [*command(), *args], capture_output=True, text=True, timeout=120, env={**base, **env}, check=False
    )


def test_demo_runs_without_an_account(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run(["demo"], tmp_path, KLING_OUTPUT_DIR=str(out), KLING_SIM_DURATION="2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "create_image, get_task, wait_for_task, list_tasks" in proc.stdout
    assert "progress" in proc.stdout
    saved = [Path(p) for p in re.findall(r"^\s+(/\S+\.png)$", proc.stdout, flags=re.M)]
    assert saved and all(p.is_file() and p.is_relative_to(out / "simulated") for p in saved)


def test_doctor_in_simulate_mode_is_ready(tmp_path: Path) -> None:
    proc = run(["--simulate", "doctor"], tmp_path, KLING_OUTPUT_DIR=str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[ok] API call" in proc.stdout and "Ready" in proc.stdout


def test_doctor_without_credentials_says_what_to_set(tmp_path: Path) -> None:
    proc = run(["doctor"], tmp_path, KLING_OUTPUT_DIR=str(tmp_path / "out"))
    assert proc.returncode == 1
    assert "[FAIL] credentials" in proc.stdout and "KLING_API_KEY" in proc.stdout


def test_placeholder_key_is_refused_at_start(tmp_path: Path) -> None:
    proc = run(["doctor"], tmp_path, KLING_API_KEY="${KLING_API_KEY}")
    assert proc.returncode == 2
    assert "KLING_API_KEY" in proc.stderr and "placeholder" in proc.stderr
    assert proc.stdout == ""
