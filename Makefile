# The GAN course. Two commands on a fresh machine:
#   make train   set up .venv and train the FC GAN for a few minutes (the main job)
#   make test    set up .venv and run the whole test suite (units + notebooks, fast mode)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SECONDS_TO_TRAIN ?= 120
# ipykernel 7.3+ warns at every kernel start that its local TCP sockets are unencrypted;
# "auto" has jupyter_client give each kernel CurveZMQ keys where the kernel supports them.
KERNEL_ENCRYPTION := --KernelManager.transport_encryption=auto

.PHONY: setup train test test-browser lab notebooks bench clean

setup: $(STAMP)

# One environment for everything; reinstalled when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

train: $(STAMP)
	$(PY) -m gan_helpers train --model fc --max-seconds $(SECONDS_TO_TRAIN) --out images/runs/fc-mnist

# Unit tests, then every notebook under nbval in fast mode (each cell shows as a test).
test: $(STAMP)
	GAN_COURSE_FAST=1 $(PY) -m pytest -v tests --ignore=tests/browser \
		--nbval-lax --nbval-current-env notebooks

# Every notebook in a real JupyterLab in headless Chromium (Debian: chromium, chromium-driver).
test-browser: $(STAMP)
	GAN_COURSE_FAST=1 $(PY) -m pytest -v tests/browser

# Re-execute the notebooks in place, full length, to refresh their committed outputs.
notebooks: $(STAMP)
	$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace $(KERNEL_ENCRYPTION) \
		--ExecutePreprocessor.timeout=1800 --ExecutePreprocessor.record_timing=False \
		notebooks/*.ipynb notebooks/assignments/*.ipynb
	$(PY) -m gan_helpers tidy-notebooks notebooks/*.ipynb notebooks/assignments/*.ipynb

lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(KERNEL_ENCRYPTION) $(if $(filter 0,$(shell id -u)),--allow-root,) notebooks/

bench: $(STAMP)
	$(PY) bench/speed.py

# What the tests and fast-mode notebooks leave; trained runs in images/runs/ stay.
clean:
	rm -rf images/runs/fast images/runs/browser .pytest_cache
