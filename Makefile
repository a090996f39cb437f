# Chorus: `make run` runs it, `make test` runs the whole suite. Both set everything up
# on a fresh machine first (Debian packages, a virtualenv in .venv, the package and its
# extras); the set-up step is skipped once done, until pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,local,postgres,e2e,captions
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
PYTEST_ARGS ?=

.PHONY: run test bench lint install migrate docs clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install-system-deps.sh tests/widget_host/package-lock.json
	bash scripts/install-system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing chorus[$(EXTRAS)] into $(VENV) (log: $(VENV)/pip.log)"
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[$(EXTRAS)]' > $(VENV)/pip.log 2>&1 \
		|| { tail -40 $(VENV)/pip.log; exit 1; }
	$(BIN)/python -c "import bot, bridge, nio, sqlmodel, alembic, apscheduler, aiohttp, numpy, pydub"
	@echo "installing the tests' widget host (matrix-widget-api, pinned in tests/widget_host/package-lock.json)"
	npm ci --prefix tests/widget_host --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $(STAMP)

config.toml:
	cp config.example.toml config.toml
	@echo "created config.toml from config.example.toml (edit it to use your own homeserver)"

run: $(STAMP) config.toml
	$(BIN)/python -m bot --config config.toml run

migrate: $(STAMP) config.toml
	$(BIN)/python -m bot --config config.toml migrate

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# about 10 minutes: 11 speakers, a ladder of listeners, 60 s a step; stops at the first failing step
# then about 6 minutes: live.ogg against Icecast, 1,000 listeners each, three page durations
# then about 3 minutes: one person floods the bot with 50 commands/s (prints a table)
bench: $(STAMP)
	bash scripts/install-system-deps.sh
	$(BIN)/python bench/bridge_bench.py --speakers 11 --listeners 200,400,600,800,1000,1200,1500,2000,3000,5000,10000 --seconds 60 --results bench/RESULTS.md
	$(BIN)/python bench/bridge_bench.py --speakers 11 --bundle-ms 100 --listeners 500,1000,2000,3000,4000,5000,6000,8000,10000 --seconds 60 --results bench/RESULTS.md
	$(BIN)/python bench/bridge_bench.py --speakers 11 --bundle-ms 100 --edges 2 --workers 4 --listeners 2000,5000,10000 --seconds 60 --keep-going --results bench/RESULTS.md
	$(BIN)/python bench/captions_bench.py --max-speakers 10
	$(BIN)/python bench/ogg_bench.py --listeners 1000 --page-ms 20,200,1000 --seconds 30 --results bench/RESULTS.md
	$(BIN)/python bench/command_flood_bench.py --rate 50 --seconds 10
	$(BIN)/python bench/db_tick_bench.py --members 4 --phase 60

lint: $(STAMP)
	$(BIN)/ruff check bot bridge tests bench migrations

docs: $(STAMP)
	$(BIN)/python -m bot docs

clean:
	rm -rf $(VENV) var .pytest_cache
