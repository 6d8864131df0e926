# The two commands of the README's Quick start. Both set up .venv first (idempotent).
.PHONY: setup run test
setup:
	bash scripts/setup.sh
run: setup
	.venv/bin/python run.py $(ARGS)
test: setup
	.venv/bin/python -m pytest -q $(ARGS)
