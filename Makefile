# xenlvm: `make demo` shows the hooks on real LVM in a sandbox; `make test` runs every test.
# Both work on a fresh Debian machine as root: they install what they need first.

PYTHON     ?= python3
VENV       ?= .venv
VPY        := $(VENV)/bin/python
# Debian packages the sandbox needs: a real Linux kernel as a process (user-mode-linux),
# LVM and the filesystems it tests with; fdisk (sfdisk) writes the test VM disks' partition
# tables. Installed only when missing.
DEB_PACKAGES := user-mode-linux lvm2 kmod xfsprogs e2fsprogs thin-provisioning-tools \
                util-linux fdisk psmisc python3-venv

.PHONY: help deps test unit coverage system demo bench lint dist clean

help:
	@echo "make demo   - run sbc_pre, a tar backup and sbc_post on real LVM in a sandbox"
	@echo "make test   - install what is needed, then run unit and system tests"
	@echo "make unit   - unit tests only (no sandbox)"
	@echo "make coverage - unit tests with line coverage per module"
	@echo "make lint   - ruff"
	@echo "make bench  - measure the hooks against the manual's shell in the sandbox (bench/results.md)"
	@echo "make dist   - dist/xenlvm.pyz, one file for offline hosts (python3 >= 3.9)"

deps: $(VENV)/.installed .work/.debian-packages

.work/.debian-packages:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@mkdir -p .work && touch $@

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# compat: a plain path in a .pth instead of an import hook that every Python start in the
	# guest would pay for (~0.1 s each there); plain -e where a setuptools no longer has it
	$(VPY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat 2>/dev/null \
		|| $(VPY) -m pip install -q -e '.[test]'
	@touch $@

# Four sandboxes side by side (a sandbox often waits on timeouts and paced writes, so four share
# two cores well). --maxschedchunk 1: a worker keeps at most two tests queued and takes the next
# one as it finishes one, so the slowest tests, which tests/conftest.py puts first, spread over
# all four instead of landing in the first worker's initial chunk (11 min against 8.5).
PYTEST_PARALLEL := -n 4 --dist load --maxschedchunk 1

test: deps
	$(VPY) -m ruff check xenlvm tests
	$(VPY) -m pytest -q $(PYTEST_PARALLEL) tests

unit: deps
	$(VPY) -m pytest -q tests/unit

coverage: deps
	$(VPY) -m coverage run --source xenlvm -m pytest -q tests/unit
	$(VPY) -m coverage report

system: deps
	$(VPY) -m pytest -q $(PYTEST_PARALLEL) tests/system

demo: deps
	$(VPY) -m tests.system.demo

# Timings of the hooks against the manual's shell, in one sandbox boot (about 10 minutes);
# prints a table and writes bench/results.md.
bench: deps
	$(VPY) -m bench.run

lint: deps
	$(VPY) -m ruff check xenlvm tests

# One file for hosts without network access: xenlvm with click and PyYAML (pure Python; click
# below 8.2 still runs on Python 3.9). Copy dist/xenlvm.pyz to the host and run it with python3.
dist: deps
	rm -rf build/zipapp && mkdir -p build/zipapp dist
	$(VPY) -m pip install -q --no-compile --target build/zipapp 'click>=8.0,<8.2' 'PyYAML>=5.4,<7'
	find build/zipapp -name '*.so' -delete
	rm -rf build/zipapp/bin build/zipapp/*.dist-info
	cp -r xenlvm build/zipapp/
	find build/zipapp -name __pycache__ -prune -exec rm -rf {} +
	$(VPY) -m zipapp build/zipapp --python '/usr/bin/env python3' --main 'xenlvm.cli:main' --output dist/xenlvm.pyz
	@echo "built dist/xenlvm.pyz: on the host, python3 xenlvm.pyz --help"

clean:
	rm -rf .work build dist *.egg-info
