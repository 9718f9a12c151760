# Two commands on a fresh machine (Linux, Python 3.11):
#   make demo   set up .venv from requirements.lock if it is missing or older than the lock, then
#               run the whole pipeline on the generated demo data (results/report.html)
#   make test   the same set-up plus the vlm extra (requirements-vlm.lock, for the Qwen baselines' tests),
#               then the test suite
# People who manage their own environment run the steps in the README instead.
PYTHON ?= python3.11
VENV ?= .venv
CORES ?= 8

.PHONY: demo test setup setup-vlm
setup: $(VENV)/.installed
setup-vlm: $(VENV)/.vlm-installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.lock
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $@

# the Qwen2.5-VL baselines' extra, exactly as locked; kept out of the demo's set-up (with transformers
# installed, every MONAI import, and so every pipeline job, takes about a second longer)
$(VENV)/.vlm-installed: $(VENV)/.installed requirements-vlm.lock
	$(VENV)/bin/pip install -q --no-deps -r requirements-vlm.lock
	touch $@

# the pipeline's jobs call `python -m lvdr` and the tests call snakemake: the venv leads PATH
RUN = PATH="$(abspath $(VENV))/bin:$$PATH" VIRTUAL_ENV="$(abspath $(VENV))"

demo: setup
	$(RUN) snakemake --cores $(CORES) results/report.html

test: setup setup-vlm
	$(RUN) python -m pytest -q
