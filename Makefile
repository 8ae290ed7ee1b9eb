# make demo: create .venv, install, analyse the bundled DiT example, write its muP source
#            (demo-output/dit_mup.py), check it by running it against apply at two widths,
#            then coordinate-check it under mup and sp (figure and JSON in demo-output/).
# make test: create .venv, install, run the whole test suite (slow tests included).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test test-fast test-thorough lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test,models,examples,dev,tune]"
	$(BIN)/pip install --quiet --no-deps mup
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/muprewrite analyze examples/dit.py --model "DiT(depth=4, hidden_size=256, num_heads=4)"
	$(BIN)/muprewrite analyze examples/dit.py --model "DiT(depth=4, hidden_size=256, num_heads=4)" \
		--base "DiT(depth=4, hidden_size=128, num_heads=2)"
	mkdir -p demo-output
	$(BIN)/muprewrite examples/dit.py --force -o demo-output/dit_mup.py \
		--model "DiT(depth=4, hidden_size=256, num_heads=2)" --base "DiT(depth=4, hidden_size=128, num_heads=2)"
	$(BIN)/muprewrite demo-output/dit_mup.py --check
	$(BIN)/muprewrite check demo-output/dit_mup.py --original examples/dit.py \
		--model "DiT(depth=4, hidden_size=256, num_heads=2)" --model "DiT(depth=4, hidden_size=512, num_heads=2)"
	$(BIN)/muprewrite coord-check examples/dit.py --force -o demo-output/coord_check.png \
		--model "DiT(depth=2, hidden_size={width}, num_heads={width} // 32)" \
		--widths 64,128,256,512 --rule mup --rule sp --seeds 1

# two pytest-xdist workers (CI has two cores), one test file per worker at a time, so that a
# file's module fixtures are built once; JOBS=0 runs everything in this one process
JOBS    ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-thorough: $(STAMP)
	HYPOTHESIS_PROFILE=thorough $(BIN)/python -m pytest -q -m properties

lint: $(STAMP)
	$(BIN)/ruff check muprewrite tests examples benchmarks
	$(BIN)/mypy muprewrite

bench: $(STAMP)
	$(BIN)/python benchmarks/analyze_scale.py
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/coord_check.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache demo-output
