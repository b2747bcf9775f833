#!/usr/bin/env python
"""Download microns from its official source: `python scripts/download_microns.py --output data/microns`.

Reads the cutout through cloud-volume, writes each HDF5 file atomically and records its
SHA-256 in SHA256SUMS (`--verify` re-checks files on disk). See `neurons.data.download`.
"""

import sys

from neurons.data.download import main

if __name__ == "__main__":
    sys.exit(main("microns"))
