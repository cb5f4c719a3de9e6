# The two commands of the README: `make bench` (default benchmark, offline, CPU) and `make test`.
VENV ?= .venv
STAMPS := $(VENV)/.stamps
DEPS := pyproject.toml setup.py requirements/torch.txt scripts/setup.sh

.PHONY: bench test quick micro setup clean-cache

bench: $(STAMPS)/base
	$(VENV)/bin/slimbench run $(ARGS)

quick: $(STAMPS)/base
	$(VENV)/bin/slimbench run --profile quick $(ARGS)

test: $(STAMPS)/test
	$(VENV)/bin/python -m pytest -q $(ARGS)

# Micro-benchmarks (pytest-benchmark): saved under results/benchmarks/micro/ and compared with the
# last saved run there (commit the new file to make it the next comparison's reference).
micro: $(STAMPS)/test
	$(VENV)/bin/python -m pytest benchmarks/micro -q --benchmark-storage=results/benchmarks/micro \
		--benchmark-autosave --benchmark-compare --benchmark-columns=min,median,iqr,rounds \
		--benchmark-sort=name $(ARGS)

setup: $(STAMPS)/base

$(STAMPS)/base: $(DEPS)
	VENV=$(VENV) bash scripts/setup.sh
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/test: $(DEPS) $(wildcard tests/plugins/*/pyproject.toml)
	VENV=$(VENV) WITH_TEST=1 bash scripts/setup.sh
	@mkdir -p $(STAMPS) && touch $@ $(STAMPS)/base

clean-cache:
	rm -rf results/cache
