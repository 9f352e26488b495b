# Two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test

$(STAMP): pyproject.toml
	bash scripts/install_ffmpeg_libs.sh
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --upgrade pip
	$(VENV)/bin/python -m pip install torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/python -m pip install -e '.[mt,dev]' torch==2.14.1 torchvision==0.29.1
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/seqctx demo

test: $(STAMP)
	$(VENV)/bin/ruff check seqctx tests scripts
	$(VENV)/bin/ruff format --check seqctx tests scripts
	$(VENV)/bin/python -m pytest -q
