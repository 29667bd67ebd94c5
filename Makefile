# FER Studio: `make run` starts the app, `make test` runs the whole suite (browser tests included).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501
# pytest-xdist workers for `make test`, each file whole on one worker (files with the most tests
# first, xdist's default). Three on 2 cores: the tests wait on servers, browsers and child
# processes much of the time. Handing out the longest files first was slower (990 s against
# 672 s): the heavy TensorFlow files then all ran at once. TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 3
# Byte-compile the virtualenv once, on both cores, after each install. Where PYTHONDONTWRITEBYTECODE
# is set (as on our CI machines) Python never writes .pyc files itself, and every process would
# compile TensorFlow's sources again: a cold `import tensorflow, keras, cv2, streamlit, fastapi`
# takes 14 s of CPU without them and 6 s with them, and the suite starts dozens of such processes.
# Compiling takes about 20 s (35 s of CPU); files already compiled are skipped.
COMPILE = $(PY) -m compileall -qq -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"

.PHONY: run test install install-dev chromium postgresql demo serve clean

run: install demo
	$(PY) -m streamlit run streamlit_app.py --server.port $(PORT) --browser.gatherUsageStats false

test: install-dev chromium postgresql demo
	$(PY) -m ruff check --quiet .
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

install: $(VENV)/.installed
install-dev: $(VENV)/.dev-installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --no-compile -q -r requirements.txt
	$(COMPILE)
	touch $@

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install --disable-pip-version-check --no-compile -q -r requirements-dev.txt
	$(COMPILE)
	touch $@

# Debian's Chromium for the browser tests (Playwright cannot download browsers here).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji) >/dev/null; \
	  else echo "chromium missing and apt-get unavailable: browser tests will skip (fail under CI=true)"; fi; \
	fi

# Debian's PostgreSQL server for the feedback-store tests (a throwaway cluster per test session).
postgresql:
	@if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null; \
	  else echo "PostgreSQL missing and apt-get unavailable: PostgreSQL tests will skip (fail under CI=true)"; fi; \
	fi

# The embedded synthetic demo dataset (generated once, in seconds).
demo: install
	$(PY) -m fer_core.data.demo

serve: install
	$(PY) -m fer_core serve

clean:
	rm -rf $(VENV) .pytest_cache
