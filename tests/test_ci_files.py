"""The CI files users copy (ci/) are run here, command by command, so they cannot rot.

The install step is the one command not executed (it would reinstall TensorFlow into this
environment); it must be exactly the install this repository's own CI runs (.ci/run).
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, List
from xml.etree import ElementTree as ET

import pytest
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


# --------------------------------------------------------------------------- matrix forms


def _expand(value: str, matrix: Dict[str, str]) -> str:
    for k, v in matrix.items():
        value = value.replace("${{ matrix.%s }}" % k, v)
    return value


def _combos(matrix: Dict[str, List[str]]) -> List[Dict[str, str]]:
    import itertools

    keys = list(matrix)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(matrix[k] for k in keys))]


def _generous(report: Path) -> str:
    """A baseline as a user would commit it: this report, its latencies made generous (timing noise)."""
    base = json.loads(report.read_text())
    for a in base["artifacts"]:
        a["latency"]["p50_ms"] *= 100
    return json.dumps(base)


def _too_fast(report: Path) -> str:
    base = json.loads(report.read_text())
    for a in base["artifacts"]:
        a["latency"]["p50_ms"] = 1e-6
    return json.dumps(base)


@pytest.mark.slow
def test_github_matrix_builds_one_bundle_per_job_and_compares_them_all(sample, tmp_path):
    wf = yaml.safe_load((ROOT / "ci" / "github" / "edgeship-matrix.yml").read_text())
    build, gather = wf["jobs"]["build"], wf["jobs"]["compare"]
    assert build["strategy"]["fail-fast"] is False and gather["needs"] == "build" and gather["if"] == "always()"
    repo = tmp_path / "repo"
    repo.mkdir()
    summary = tmp_path / "summary.md"
    combos = _combos(build["strategy"]["matrix"])
    assert len(combos) == 2
    names = []
    for combo in combos:  # each matrix job, as the runner runs it: its own GITHUB_ENV, steps in order
        gh_env = tmp_path / f"env-{len(names)}"
        gh_env.write_text("")
        env = shell_env(repo, {**wf["env"], "GITHUB_ENV": str(gh_env), "GITHUB_STEP_SUMMARY": str(summary)})
        for step in build["steps"]:
            if "run" not in step:
                continue
            if step["name"] == "Install edgeship":
                assert step["run"].strip() == INSTALL
                continue
            step_env = {**env, **{k: _expand(str(v), combo) for k, v in step.get("env", {}).items()}}
            step_env.update(dict(line.split("=", 1) for line in gh_env.read_text().splitlines() if "=" in line))
            proc = run_shell(step["run"], repo, step_env)
            assert proc.returncode == 0, (step["name"], proc.stdout, proc.stderr)
        names.append(dict(line.split("=", 1) for line in gh_env.read_text().splitlines())["NAME"])
    assert names == ["sample-arm64", "sample-x86_64"]
    # actions/download-artifact with a pattern puts each artifact in reports/<artifact name>/
    for name in names:
        shutil.copytree(repo / "dist" / name, repo / "reports" / f"edgeship-{name}")
    (gather_step,) = [s for s in gather["steps"] if s.get("name") == "Compare every report with its baseline"]
    baselines = repo / wf["env"]["BASELINES"]
    baselines.mkdir(parents=True)
    (baselines / "sample-arm64.json").write_text(_generous(repo / "dist" / "sample-arm64" / "report.json"))
    env = shell_env(repo, {**wf["env"], "GITHUB_STEP_SUMMARY": str(summary)})
    proc = run_shell(gather_step["run"], repo, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = summary.read_text()
    assert "### sample-arm64" in text and "✅ no regression" in text and "no baseline for sample-x86_64" in text
    (baselines / "sample-x86_64.json").write_text(_too_fast(repo / "dist" / "sample-x86_64" / "report.json"))
    proc = run_shell(gather_step["run"], repo, env)
    assert proc.returncode == 1 and "regression" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_gitlab_matrix_builds_each_bundle_and_the_last_job_compares(sample, tmp_path):
    ci = yaml.safe_load((ROOT / "ci" / "gitlab" / "edgeship-matrix.gitlab-ci.yml").read_text())
    build, gather = ci["edgeship-build"], ci["edgeship-compare"]
    assert build["before_script"] == [INSTALL] == gather["before_script"]
    assert gather["needs"] == ["edgeship-build"] and gather["when"] == "always"
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "strict.toml").write_text(STRICT_PROFILE)
    combos = _combos(build["parallel"]["matrix"][0])
    assert [c["TARGET"] for c in combos] == ["arm64", "x86_64"]
    # the first matrix job as shipped; a second with the strict profile misses its budget (exit 1)
    for combo, code in ((combos[0], 0), ({"MODEL": "", "TARGET": "strict.toml"}, 1)):
        proc = run_shell("\n".join(build["script"]), repo, shell_env(repo, combo))
        assert proc.returncode == code, proc.stdout + proc.stderr
    assert (repo / "dist" / "sample-arm64" / "junit.xml").is_file() and (repo / "dist" / "sample-strict" / "report.json").is_file()
    baselines = repo / gather["variables"]["BASELINES"]
    baselines.mkdir(parents=True)
    (baselines / "sample-arm64.json").write_text(_generous(repo / "dist" / "sample-arm64" / "report.json"))
    env = shell_env(repo, {k: str(v) for k, v in gather["variables"].items()})
    proc = run_shell("\n".join(gather["script"]), repo, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "== sample-arm64" in proc.stdout and "no baseline for sample-strict" in proc.stdout
    assert "no regression" in (repo / "compare.md").read_text()
    (baselines / "sample-strict.json").write_text(_too_fast(repo / "dist" / "sample-strict" / "report.json"))
    proc = run_shell("\n".join(gather["script"]), repo, env)
    assert proc.returncode == 1
