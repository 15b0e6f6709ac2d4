"""The OCI distribution-spec conformance suite v1.1.1 (a peer's test, prebuilt under ../shared/tools) against the registry."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from emulator import Emulator

REPO = Path(__file__).resolve().parents[2]
RELATIVE = Path("shared") / "tools" / "oci-conformance" / "conformance.test"
# ACR's own published v1.1 run: 0 failures, 5 skips (the same five are skipped here, for the same reasons: the suite skips
# them itself when the registry answers as ACR does).
ACR_SKIPS = 5


def conformance_binary() -> Path | None:
    """`<repo>/../shared/tools/oci-conformance/conformance.test` (where CI has it); from a git worktree, also beside the
    main checkout the worktree belongs to."""
    candidates = [REPO.parent / RELATIVE]
    try:
        common = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=REPO,
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        candidates.append(Path(common).parent.parent / RELATIVE)
    except (OSError, subprocess.SubprocessError):
        pass
    return next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


def scenario() -> dict:
    return {"subscriptions": [{"id": "00000000-0000-0000-0000-0000000000c1", "registries": [{
        "name": "conformance", "admin_user": {"enabled": True, "password": "conformance-secret"},
        "repositories": [{"name": "conformance/other", "images": [{"tags": ["seed"], "seed": "other"}]}],
    }]}]}


def junit_counts(report: Path) -> tuple[int, int, int, list[str]]:
    """(tests, failures + errors, skipped, names of the failed) from the suite's junit.xml."""
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tests = failures = skipped = 0
    failed: list[str] = []
    for suite in suites:
        for case in suite.iter("testcase"):
            tests += 1
            if case.find("failure") is not None or case.find("error") is not None:
                failures += 1
                failed.append(case.get("name", "?"))
            elif case.find("skipped") is not None:
                skipped += 1
    return tests, failures, skipped, failed


@pytest.mark.slow
def test_oci_conformance_suite_passes_like_acr(make_emulator: Callable[..., Emulator], tmp_path: Path) -> None:
    binary = conformance_binary()
    if binary is None:
        where = REPO.parent / RELATIVE
        if os.environ.get("CI") == "true":
            pytest.fail(f"the OCI conformance suite is missing at {where}; CI must have ../shared beside the checkout")
        pytest.skip(f"the OCI conformance suite is not at {where} (it comes with ../shared)")
    emu = make_emulator(scenario(), apply_env=False)
    report = tmp_path / "oci-report"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
        "OCI_ROOT_URL": emu.endpoints["registries"]["conformance"], "OCI_NAMESPACE": "conformance/test",
        "OCI_CROSSMOUNT_NAMESPACE": "conformance/other", "OCI_USERNAME": "conformance", "OCI_PASSWORD": "conformance-secret",
        "OCI_TEST_PULL": "1", "OCI_TEST_PUSH": "1", "OCI_TEST_CONTENT_DISCOVERY": "1", "OCI_TEST_CONTENT_MANAGEMENT": "1",
        "OCI_HIDE_SKIPPED_WORKFLOWS": "0", "OCI_REPORT_DIR": str(report),
    }
    run = subprocess.run([str(binary)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    tally = [line for line in run.stdout.splitlines() if "Passed" in line and "Failed" in line]
    tests, failures, skipped, failed = junit_counts(report / "junit.xml")
    detail = f"{tally[-1:] or run.stdout[-3000:]} failed: {failed}\n{run.stdout[-6000:]}"
    assert failures == 0, detail
    assert skipped == ACR_SKIPS, detail
    assert tests > 70 and run.returncode == 0, detail
    # the storage redirect was exercised: blob GETs reached storage under its own host name, without the registry token
    storage = [r for r in emu.requests_since(0) if r["host"] == "storage"]
    assert storage and all(r["status"] in (200, 206) for r in storage), storage[:5]
