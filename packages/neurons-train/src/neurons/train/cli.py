"""``neurons-train``: Hydra command line around :func:`neurons.train.run_training`.

Usage::

    neurons-train --config-name snemi3d data.batch_size=8 training.max_epochs=200 optimizer.lr=5e-4
    neurons-train --config-name synthetic training.fast_dev_run=true
    neurons-train --config-name synthetic training.ckpt_path=last      # resume
    neurons-train --config-dir my_configs --config-name my_experiment  # your own YAML
    neurons-train --cfg job                                            # print the config

The configs are the YAML files shipped inside the package (see :func:`config_dir`); a user's
own YAML can start from them with ``defaults: [default, _self_]`` when ``--config-dir`` points
to its folder. Runs write to ``training.output_dir`` (default ``outputs/<experiment_name>``):
``checkpoints/``, ``tensorboard/``, ``.hydra/``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from neurons.train.config import config_dir

__all__ = ["train_main"]


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``neurons-train`` (arguments as for any Hydra app).

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 2 on a configuration / missing-data error.
    """
    import hydra
    from omegaconf import DictConfig

    from neurons.data import DataError
    from neurons.train.errors import TrainError

    status = {"code": 0}

    @hydra.main(config_path=str(config_dir()), config_name="default", version_base=None)
    def _app(cfg: DictConfig) -> None:
        from neurons.train.runner import run_training

        try:
            result = run_training(cfg)
        except (TrainError, DataError) as exc:  # a user mistake: one line, exit 2
            print(f"neurons-train: error: {exc}", file=sys.stderr)
            status["code"] = 2
            return
        if result.trainer.is_global_zero:
            if result.best_checkpoint:
                print(f"best checkpoint: {result.best_checkpoint}")
            if result.last_checkpoint:
                print(f"last checkpoint: {result.last_checkpoint}")

    args = list(sys.argv[1:] if argv is None else argv)
    message = _precheck(args)
    if message is not None:  # rejected before Hydra creates the run folder (.hydra/, logs)
        print(f"neurons-train: error: {message}", file=sys.stderr)
        return 2
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    _app()
    return status["code"]


_NAME_FLAGS = ("--config-name", "-cn")
_PLAIN_FLAGS = ("--config-name", "-cn", "--config-dir", "-cd")


def _precheck(args: list[str]) -> str | None:
    """Compose and validate a plain run's config (and its ``training.ckpt_path``) up front.

    Returns the one-line error for a config Hydra would reject (an unknown key without ``+``
    included) or a checkpoint that cannot be resumed from, else ``None``. Runs that use other
    Hydra flags (``--cfg``, ``--help``, ``-m``, ...) are left to Hydra.
    """
    from neurons.train.checkpointing import resolve_ckpt_path
    from neurons.train.config import compose_config
    from neurons.train.errors import TrainError

    name, folder, overrides, i = "default", None, [], 0
    while i < len(args):
        a = args[i]
        flag, eq, value = a.partition("=")
        if a.startswith("-") and flag in _PLAIN_FLAGS:
            if not eq:
                i += 1
                value = args[i] if i < len(args) else ""
            if flag in _NAME_FLAGS:
                name = value
            else:
                folder = value
        elif a.startswith("-"):
            return None
        elif not a.startswith(("hydra.", "hydra/", "+hydra", "~hydra")):
            overrides.append(a)
        i += 1
    if folder is not None:  # a user's folder layered over the shipped configs: Hydra decides
        return None
    try:
        cfg = compose_config(name, overrides)
        ckpt = cfg.training.ckpt_path
        if ckpt not in (None, "", "last"):
            resolve_ckpt_path(str(ckpt), ".")
    except TrainError as exc:
        return " ".join(str(exc).split("\n"))
    return None


def main() -> None:  # pragma: no cover - console script wrapper
    sys.exit(train_main())


if __name__ == "__main__":  # pragma: no cover
    main()
