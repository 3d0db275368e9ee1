"""The CI files users copy (ci/) are run here, command by command, so they cannot rot.

The install step is the one command not executed (it would reinstall TensorFlow into this
environment); it must be exactly the install this repository's own CI runs (.ci/run).
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, List
from xml.etree import ElementTree as ET

import yaml  # noqa: E402  (pyyaml: a test extra)

from .conftest import ROOT  # noqa: E402
from .test_reports import STRICT_PROFILE  # noqa: E402

INSTALL = "python -m pip install -c constraints.txt ."


def shell_env(tmp: Path, variables: Dict[str, str]) -> Dict[str, str]:
    """The CI job's variables, and an `edgeship` command that runs this checkout (python -m edgeship)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "edgeship"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m edgeship "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    return {**os.environ, **variables, "PYTHONPATH": str(ROOT), "PATH": f"{bin_dir}:{os.environ['PATH']}", "COLUMNS": "200"}


def run_shell(script: str, cwd: Path, env: Dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def github_job(workflow: Dict, repo: Path, overrides: Dict[str, str], only: List[str] = ()) -> tuple[bool, List[str]]:
    """Run the `run:` steps as GitHub would: bash -e each; after a failure only `if: always()` steps."""
    (job,) = workflow["jobs"].values()
    env = shell_env(repo, {**{k: str(v) for k, v in workflow["env"].items()}, **overrides})
    failed, log = False, []
    for step in job["steps"]:
        if "run" not in step or (only and step["name"] not in only):
            continue
        if step["name"] == "Install edgeship":
            assert step["run"].strip() == INSTALL
            continue
        if failed and "always()" not in step.get("if", ""):
            continue
        proc = run_shell(step["run"], repo, env)
        log.append(f"## {step['name']} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        failed = failed or proc.returncode != 0
    return not failed, log


def test_install_line_is_the_one_this_repository_tests():
    assert 'pip install -q -c constraints.txt -e ".[test]"' in (ROOT / ".ci" / "run").read_text()
    assert (ROOT / "constraints.txt").is_file() and (ROOT / "pyproject.toml").is_file()
    gl = yaml.safe_load((ROOT / "ci" / "gitlab" / "edgeship.gitlab-ci.yml").read_text())
    assert gl["edgeship"]["before_script"] == [INSTALL]


def test_github_workflow_builds_publishes_and_gates(arm64_build, tmp_path):
    workflow = yaml.safe_load((ROOT / "ci" / "github" / "edgeship.yml").read_text())
    repo = tmp_path / "repo"
    (repo / "ci").mkdir(parents=True)
    summary = tmp_path / "summary.md"
    # a baseline as a user would commit it: an earlier report (its latencies made generous, so
    # this run's timing noise cannot trip the gate; the parity figures are the real ones)
    base = json.loads((arm64_build.bundle / "report.json").read_text())
    for a in base["artifacts"]:
        a["latency"]["p50_ms"] *= 100
    (repo / "ci" / "edgeship-baseline.json").write_text(json.dumps(base))
    ok, log = github_job(workflow, repo, {"GITHUB_STEP_SUMMARY": str(summary)})
    assert ok, "\n".join(log)
    bundle = repo / workflow["env"]["BUNDLE"]
    text = summary.read_text()
    assert "## edgeship: digits → arm64 — ✅" in text and "✅ no regression" in text
    suite = ET.parse(bundle / "junit.xml").getroot().find("testsuite")
    assert int(suite.get("tests")) > 8 and suite.get("failures") == "0"
    assert (bundle / "report.html").is_file()

    # the same job against a baseline that was much faster: the gate step fails the job
    for a in base["artifacts"]:
        a["latency"]["p50_ms"] = 1e-6
    (repo / "ci" / "edgeship-baseline.json").write_text(json.dumps(base))
    ok, log = github_job(workflow, repo, {"GITHUB_STEP_SUMMARY": str(summary)}, only=["Regression gate against the baseline"])
    assert not ok and "regression(s)" in log[-1]
    assert "❌ 4 regression(s)" in summary.read_text()


def test_gitlab_job_fails_the_pipeline_on_a_missed_budget_and_keeps_the_junit(sample, tmp_path):
    job = yaml.safe_load((ROOT / "ci" / "gitlab" / "edgeship.gitlab-ci.yml").read_text())["edgeship"]
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "strict.toml").write_text(STRICT_PROFILE)
    env = shell_env(repo, {**{k: str(v) for k, v in job["variables"].items()}, "TARGET": "strict.toml"})
    proc = run_shell("\n".join(job["script"]), repo, env)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the pipeline fails
    assert "budget check(s) failed" in proc.stderr
    junit = repo / job["artifacts"]["reports"]["junit"]
    suite = ET.parse(junit).getroot().find("testsuite")
    assert int(suite.get("failures")) == 2  # the two int8 artifacts' snr_db
    for p in job["artifacts"]["paths"]:
        assert (repo / p).exists(), p
