#!/usr/bin/env python
"""Train a Neurons model (thin wrapper around the ``neurons-train`` command).

Examples
--------
    python scripts/train.py --config-name synthetic training.fast_dev_run=true
    python scripts/train.py --config-name snemi3d data.batch_size=8 training.max_epochs=200 optimizer.lr=5e-4
    python scripts/train.py --config-name snemi3d training.ckpt_path=last      # resume

Configs: configs/*.yaml (also shipped inside the neurons-train wheel). See
packages/neurons-train/README.md for every config group.
"""

import sys

from neurons.train.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
