# facerec: the two commands of the README, and a few more.
#   make demo   set everything up, then run the camera-to-results demo
#   make test   set everything up, then run lint + the test suite
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTEST_ARGS ?=

.PHONY: help setup build test lint fuzz demo demo-exchange bench clean

help:
	@echo "make demo   - set up, build, run the end-to-end demo"
	@echo "make test   - set up, build, run lint and the tests"
	@echo "make setup  - (re)create .venv/ and build into install/ (idempotent)"
	@echo "make fuzz   - fuzz each target for FACEREC_FUZZ_SECONDS (default 600 s each)"

setup:
	@bash scripts/setup.sh

build: setup

lint: setup
	@source scripts/env.sh && python -m flake8 --config setup.cfg facerec_server facerec_camera test bench launch scripts setup.py

test: setup
	@bash scripts/run_tests.sh $(PYTEST_ARGS)

# Each target of test/test_fuzz.py for FACEREC_FUZZ_SECONDS (default 600) with fresh random
# examples; what ran goes to bench/results/fuzz.json.
fuzz: setup
	@source scripts/env.sh && FACEREC_FUZZ_SECONDS=$${FACEREC_FUZZ_SECONDS:-600} \
		python -m pytest -p no:cacheprovider -q --timeout=0 test/test_fuzz.py $(PYTEST_ARGS)

demo: setup
	@bash scripts/demo.sh

demo-exchange: setup
	@source scripts/env.sh && python -m facerec_server.tools.exchange_demo

clean:
	rm -rf build install log build-colcon.log
