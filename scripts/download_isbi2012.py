#!/usr/bin/env python
"""Download isbi2012 from its official source: `python scripts/download_isbi2012.py --output data/isbi2012`.

Resumable (HTTP Range), SHA-256 verified (`--verify` re-checks files on disk). See
`neurons.data.download` for the sources and options.
"""

import sys

from neurons.data.download import main

if __name__ == "__main__":
    sys.exit(main("isbi2012"))
