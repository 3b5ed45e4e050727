"""contrib/prometheus/xenlvm-alerts.yml: valid for Prometheus (promtool check rules), each
alert proven to fire on sample series and to stay quiet on others (promtool test rules), and
built only on the metrics xenlvm writes. promtool comes from Debian's prometheus package,
which `make deps` unpacks into .work/ (installing it would also start a Prometheus server)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from xenlvm.core.state import _METRICS

REPO = Path(__file__).resolve().parents[2]

RULES = REPO / "contrib" / "prometheus" / "xenlvm-alerts.yml"
RULE_TESTS = REPO / "contrib" / "prometheus" / "xenlvm-alerts.test.yml"


def _promtool() -> str:
    unpacked = REPO / ".work" / "promtool" / "usr" / "bin" / "promtool"
    found = str(unpacked) if unpacked.exists() else shutil.which("promtool")
    assert found, "promtool is missing: run make deps (it unpacks it from Debian's prometheus package)"
    return found


def test_promtool_accepts_the_rules():
    done = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def test_each_alert_fires_on_its_sample_series_and_not_on_the_others():
    done = subprocess.run([_promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                          cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test["alert_rule_test"]}
    defined = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"]
               for rule in group["rules"]}
    assert tested == defined


def test_the_rules_use_only_metrics_that_xenlvm_writes():
    written = {name for name, _ in _METRICS}
    used = set(re.findall(r"\bxenlvm_[a-z_]+", "\n".join(
        rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"])))
    assert used and used <= written, used - written
