"""Run every benchmark: `python -m bench` (or `make bench`)."""

from .streams import main

main()
