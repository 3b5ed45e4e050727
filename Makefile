# xenlvm: `make demo` shows the hooks on real LVM in a sandbox; `make test` runs every test.
# Both work on a fresh Debian machine as root: they install what they need first.

PYTHON     ?= python3
VENV       ?= .venv
VPY        := $(VENV)/bin/python
# Debian packages the sandbox needs: a real Linux kernel as a process (user-mode-linux),
# LVM and the filesystems it tests with; fdisk (sfdisk) writes the test VM disks' partition
# tables; gcc and libc6-dev build the sandbox's vector-register check and, for hosts with
# AVX-512 or AMX, its XSTATE shim for UML (sandbox/uml/). Installed only when missing.
DEB_PACKAGES := user-mode-linux lvm2 kmod xfsprogs e2fsprogs thin-provisioning-tools \
                util-linux fdisk psmisc python3-venv gcc libc6-dev qemu-system-common

# auto (default): UML runs with the XSTATE shim where the host CPU needs it (AVX-512, AMX);
# on: always (to exercise it on any host); off: never. See README, Development.
XENLVM_UML_SHIM ?= auto
export XENLVM_UML_SHIM

# Debian packages that build the .deb (make deb): debhelper with dh-python/pybuild, and lintian,
# which checks the result. build-essential is what dpkg-buildpackage requires of every build.
DEB_BUILD_PACKAGES := build-essential debhelper dh-python pybuild-plugin-pyproject python3-all \
                      python3-setuptools lintian
# The sandbox test installs the package with dpkg: its dependencies (Debian's click and PyYAML)
# must be there; man-db (with groff) shows and checks the man page.
DEB_TEST_PACKAGES := python3-click python3-yaml man-db
# promtool checks and tests the Prometheus alert rules. It is unpacked from Debian's prometheus
# package into .work/ only: installing that package would also install and start a server.
PROMTOOL   := .work/promtool/usr/bin/promtool
VERSION    := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' xenlvm/__init__.py)
DEB        := dist/xenlvm_$(VERSION)_all.deb
# What goes into the Debian source package (git's view, so new files count before a commit).
DEB_FILES  := $(shell git ls-files -co --exclude-standard -- xenlvm debian doc contrib \
                      config.example.yaml pyproject.toml README.md 2>/dev/null)

.PHONY: help deps test unit coverage system demo bench bench-host lint dist deb clean

help:
	@echo "make demo   - run sbc_pre, a tar backup and sbc_post on real LVM in a sandbox"
	@echo "make test   - install what is needed, then run unit and system tests"
	@echo "make unit   - unit tests only (no sandbox)"
	@echo "make coverage - unit tests with line coverage per module"
	@echo "make lint   - ruff and mypy"
	@echo "make bench  - measure the hooks against the manual's shell in the sandbox (bench/results.md)"
	@echo "make bench-host - xenlvm's own cost on this host, every command stubbed (bench/results-host.md)"
	@echo "make dist   - dist/xenlvm.pyz, one file for offline hosts (python3 >= 3.9)"
	@echo "make deb    - dist/xenlvm_$(VERSION)_all.deb, checked with lintian"

deps: $(VENV)/.installed .work/.debian-packages $(PROMTOOL)

# Install the Debian packages of a list (only the missing ones): $(call apt_install,LIST)
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    -o DPkg::Lock::Timeout=600 --no-install-recommends $$missing; \
	fi
endef

# Checked again whenever the Makefile (and so the lists) changes.
.work/.debian-packages: Makefile
	$(call apt_install,$(DEB_PACKAGES) $(DEB_TEST_PACKAGES))
	@mkdir -p .work && touch $@

$(PROMTOOL):
	rm -rf .work/promtool && mkdir -p .work/promtool
	cd .work/promtool && { apt-get -qq -o APT::Sandbox::User=root download prometheus \
	  || { apt-get update -qq && apt-get -qq -o APT::Sandbox::User=root download prometheus; }; }
	dpkg-deb --fsys-tarfile .work/promtool/prometheus_*.deb | tar -x -C .work/promtool ./usr/bin/promtool
	rm -f .work/promtool/prometheus_*.deb
	@$@ --version | head -1

.work/.deb-build-packages: Makefile
	$(call apt_install,$(DEB_BUILD_PACKAGES))
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

# The .deb first: tests/system/test_deb.py installs it in the sandbox.
test: deps deb
	$(VPY) -m ruff check xenlvm tests sandbox bench
	$(VPY) -m mypy xenlvm
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

# Timings of the hooks against the manual's shell, in one sandbox boot (about 10 minutes), after
# bench/hostcost.py on the host; prints a table and writes bench/results.md.
# BENCH_BASELINE: the commit whose xenlvm bench/hostcost.py measures beside this one (before and
# after): b5cdf47 is main before the targets, the per-domain windows, FUSE and the import work.
BENCH_BASELINE ?= b5cdf47
bench: deps
	rm -rf .work/bench-baseline && mkdir -p .work/bench-baseline
	git archive $(BENCH_BASELINE) xenlvm | tar -x -C .work/bench-baseline
	$(VPY) -m bench.run --host-baseline .work/bench-baseline

# xenlvm's own cost (interpreter, imports, its checks) on this host, every command it runs a
# stub answering from recorded output: no sandbox, about a minute; also part of make bench.
bench-host: $(VENV)/.installed
	$(VPY) -m bench.hostcost

lint: deps
	$(VPY) -m ruff check xenlvm tests sandbox bench
	$(VPY) -m mypy xenlvm

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

# The Debian package, built from a copy of the sources in build/deb with Debian's own tools
# (source and binary), then checked by lintian: any error or warning fails the build. None is
# overridden today; one that must be would go, with a comment saying why, into
# debian/source/lintian-overrides or debian/xenlvm.lintian-overrides.
deb: $(DEB)

$(DEB): .work/.deb-build-packages $(DEB_FILES)
	@changelog=$$(dpkg-parsechangelog -l debian/changelog -S Version); [ "$$changelog" = "$(VERSION)" ] \
	  || { echo "debian/changelog is at $$changelog, xenlvm/__init__.py at $(VERSION): add a changelog entry"; exit 1; }
	rm -rf build/deb && mkdir -p build/deb/xenlvm-$(VERSION) dist
	cp --parents -p $(DEB_FILES) build/deb/xenlvm-$(VERSION)/
	# Debian's own python3 and tools only: no pyenv shim or virtual environment first on PATH.
	cd build/deb/xenlvm-$(VERSION) && env -u PYTHONPATH -u VIRTUAL_ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin \
	  dpkg-buildpackage -us -uc >../build.log 2>&1 \
	  || { tail -40 ../build.log; exit 1; }
	lintian --fail-on error,warning --display-info build/deb/xenlvm_$(VERSION)_*.changes
	cp build/deb/xenlvm_$(VERSION)_all.deb $@
	@echo "built $@"

clean:
	rm -rf .work build dist *.egg-info
