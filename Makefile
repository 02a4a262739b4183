.PHONY: install demo test test-fast lint bench dist

install:
	scripts/bootstrap.sh test

demo:
	scripts/bootstrap.sh demo
	.venv/bin/python examples/main.py

# tests/k8s runs in a pytest process of its own, so that its registry and API-emulation threads don't share a
# process with the rest. (It was split off while chasing a rare "uvicorn did not start", since traced to a race
# in WebInterface.wait_started and fixed.)
test:
	scripts/bootstrap.sh test
	.venv/bin/python -m pytest -q --ignore=tests/k8s
	.venv/bin/python -m pytest -q tests/k8s

test-fast:
	.venv/bin/python -m pytest -q -m "not browser and not slow"

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports

bench:
	scripts/bootstrap.sh test
	scripts/bootstrap.sh bench
	.venv/bin/python -m benchmarks

# Every distribution's sdist and wheel into dist/, checked with `twine check --strict`.
dist:
	scripts/bootstrap.sh test
	.venv/bin/python scripts/dist.py
