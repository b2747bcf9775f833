#!/usr/bin/env python
"""Download cremi3d from its official source: `python scripts/download_cremi3d.py --output data/cremi3d`.

Resumable (HTTP Range), SHA-256 verified (`--verify` re-checks files on disk). See
`neurons.data.download` for the sources and options.
"""

import sys

from neurons.data.download import main

if __name__ == "__main__":
    sys.exit(main("cremi3d"))
