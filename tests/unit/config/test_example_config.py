"""config.example.yaml is what admins copy: it must load as written, and its commented-out
optional sections must load too once uncommented."""

from __future__ import annotations

import re
from pathlib import Path

from xenlvm.config.load import load_config, parse_config
from xenlvm.config.model import AUTO, Settings

EXAMPLE = Path(__file__).resolve().parents[3] / "config.example.yaml"


def test_example_configuration_loads_with_the_documented_defaults():
    config = load_config(str(EXAMPLE), strict=False)
    assert config.settings == Settings()  # the values shown are the defaults, as it says
    [spec] = config.jobs["xenvm"].volumes
    assert (str(spec.origin), spec.snapshot, spec.mountpoint) == ("system/xenvm", "vmbackup", "/mnt/vmbackup")


def test_commented_optional_sections_load_when_uncommented():
    text = EXAMPLE.read_text()
    text = re.sub(r"^    (volume|snapshot|size): .*\n", "", text, flags=re.M)  # volumes: replaces them
    text = re.sub(r"^    # (?=[a-z ]|  )", "    ", text, flags=re.M)
    job = parse_config(text, str(EXAMPLE)).jobs["xenvm"]
    assert [spec.mountpoint for spec in job.volumes] == ["/mnt/vmbackup/xenvm", "/mnt/vmbackup/vms2"]
    assert job.xen is not None and job.xen.domains is AUTO
    assert job.watchdog is not None and job.watchdog.threshold == 70
    assert job.vmdisks is not None and job.vmdisks.domains is AUTO and job.vmdisks.expose == "files"
