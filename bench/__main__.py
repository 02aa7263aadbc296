"""Run every benchmark: `python -m bench` (or `make bench`)."""

print("no benchmark yet")
