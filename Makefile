# Two set-up commands (see README): `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?= -m "not slow" -n 2 --durations=25  # the slowest tests, to keep the suite near 15 minutes

.PHONY: demo test test-slow clean

$(VENV)/.installed-base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[envs]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-base
	$(PY) -m pip install --quiet -e ".[test,envs,playground,atari,analysis,d4rl]"
	touch $@

demo: $(VENV)/.installed-base
	$(PY) -m experiments.preference_bandits

test: $(VENV)/.installed-test
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(VENV)/.installed-test
	$(PY) -m pytest -m slow

clean:
	rm -rf $(VENV) runs
