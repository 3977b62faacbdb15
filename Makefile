# The two commands of the README: `make demo` and `make test`. Both create .venv if missing and
# install the exact versions in requirements.lock (torch 2.13.0 CPU comes from the local wheel
# folder pip is configured with; see README).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.genlib-installed
PYTEST_ARGS ?=
# pip warns once per package about index folders named in this machine's pip config that do not exist.
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: install browser demo test bench ui lock lock-cuda clean build-info

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock 2>&1 | $(QUIET_PIP)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 | $(QUIET_PIP)
	@touch $(STAMP)

demo: install
	$(VENV)/bin/genlib pipeline digits-quick

# The browser test drives Debian's Chromium through its chromedriver (root, or sudo, installs them once).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null || $$SUDO sh -c \
	  'apt-get update -qq && apt-get install -y -qq chromium chromium-driver' >/dev/null; }

test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) bench/train_overhead.py
	$(PY) bench/sampling_speed.py
	$(PY) bench/frechet_speed.py
	$(PY) bench/knn_speed.py
	$(PY) bench/digits_quality.py
	$(PY) bench/digits_fid.py
	$(PY) bench/reweight_rarity.py

ui: install
	$(VENV)/bin/genlib ui

# Re-resolve and pin every dependency (run after changing pyproject.toml's ranges).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet -e '.[test,bench]'
	.venv-lock/bin/pip freeze --all --exclude-editable | grep -v '^-e ' > requirements.lock
	rm -rf .venv-lock
	$(MAKE) lock-cuda

# requirements-cuda.lock, the GPU nodes' lock (infra/Dockerfile, infra/cluster-launcher.yaml): the same pins,
# PyPI's CUDA build of the same torch, and the CUDA packages it needs, resolved for linux x86_64 by pip.
lock-cuda: $(STAMP)
	$(PY) infra/cuda_lock.py --lock requirements.lock --out requirements-cuda.lock

# The commit, for copies of the code without .git (`ray up` rsyncs without it; the image build takes it
# as --build-arg GENLIB_GIT_SHA): genlib.tracking.git_sha reads it there.
build-info:
	printf '{"git_sha": "%s"}\n' "$$(git rev-parse HEAD)" > genlib/_build.json

clean:
	rm -rf $(VENV) .genlib
