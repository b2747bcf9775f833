"""Thin entry point: ``python scripts/evaluate.py GT PRED [options]`` == ``neurons-eval``."""

import sys

from neurons.metrics.cli import main

if __name__ == "__main__":
    sys.exit(main())
