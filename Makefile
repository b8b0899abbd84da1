# `make demo` and `make test` build .venv from nothing, then run the main job or the tests.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: venv demo test lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[dev,edge,ray,bench]'
	touch $@

# Debian packages: Xvfb, the virtual display the GUI tests (replay screenshots) run sumo-gui
# on; tcmalloc, the allocator greenphase runs SUMO under (faster, identical results)
APT_PACKAGES := $(if $(shell command -v Xvfb),,xvfb) \
                $(if $(shell /sbin/ldconfig -p 2>/dev/null | grep libtcmalloc_minimal),,libtcmalloc-minimal4)
$(VENV)/.apt: $(VENV)/.installed
	@if [ -n "$(strip $(APT_PACKAGES))" ]; then \
	    if command -v apt-get >/dev/null; then \
	        $$([ "$$(id -u)" = 0 ] || echo sudo) sh -c 'apt-get update -qq && \
	            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(strip $(APT_PACKAGES))'; \
	    else echo "warning: no apt-get to install $(strip $(APT_PACKAGES)):" \
	        "GUI tests are skipped without xvfb, SUMO runs slower without tcmalloc" >&2; fi; \
	fi
	touch $@

venv: $(VENV)/.installed $(VENV)/.apt

# the main job: train a small DQN policy on cologne1 (about 90 s on 2 cores), then compare it
# with every classic controller over 3 held-out seeds
DEMO_RUN := runs/demo-dqn-cologne1
demo: venv
	$(VENV)/bin/greenphase train --network cologne1 --episodes 60 --out $(DEMO_RUN) --overwrite
	$(VENV)/bin/greenphase compare --network cologne1 --seeds 3 \
	    --controllers fixed,webster,actuated,max-pressure,sotl,random,trained:$(DEMO_RUN)

test: venv
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: venv
	$(VENV)/bin/greenphase bench --network cologne8

clean:
	rm -rf $(VENV) runs .pytest_cache
