#!/usr/bin/env python
"""Download mitoem2 from its official source: `python scripts/download_mitoem2.py --output data/mitoem2`.

Resumable (HTTP Range), SHA-256 verified (`--verify` re-checks files on disk). See
`neurons.data.download` for the sources and options.
"""

import sys

from neurons.data.download import main

if __name__ == "__main__":
    sys.exit(main("mitoem2"))
