.PHONY: install demo test test-fast lint bench

install:
	scripts/bootstrap.sh test

demo:
	scripts/bootstrap.sh demo
	.venv/bin/python examples/main.py

test:
	scripts/bootstrap.sh test
	.venv/bin/python -m pytest -q

test-fast:
	.venv/bin/python -m pytest -q -m "not browser and not slow"

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

bench:
	scripts/bootstrap.sh test
	scripts/bootstrap.sh bench
	.venv/bin/python -m benchmarks
