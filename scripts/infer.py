"""Thin entry point for ``neurons-infer`` (see ``neurons.train.inference.cli``).

python scripts/infer.py CHECKPOINT INPUT OUTPUT [--gt GT --gt-key KEY --block-size ... --tta flips]
"""

from __future__ import annotations

import sys

from neurons.train.inference.cli import main

if __name__ == "__main__":
    sys.exit(main())
