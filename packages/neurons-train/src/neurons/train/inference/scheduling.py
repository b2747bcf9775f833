"""Run block tasks with dask: local schedulers or a ``dask.distributed`` cluster."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .errors import StitchError

__all__ = ["LOCAL_SCHEDULERS", "compute_tasks", "connect"]

#: dask scheduler names that run in this process (anything else is a distributed address)
LOCAL_SCHEDULERS = ("threads", "processes", "sync", "synchronous", "single-threaded")


def connect(address: str) -> Any:
    """A ``distributed.Client`` connected to the scheduler at ``address`` (typed errors).

    Examples
    --------
    >>> client = connect("tcp://127.0.0.1:8786")  # doctest: +SKIP
    """
    try:
        from distributed import Client
    except ImportError as exc:
        raise StitchError(
            f"scheduler {address!r} looks like a distributed address, but dask.distributed "
            "is not installed (pip install 'neurons-train[distributed]'); or use threads|processes"
        ) from exc
    try:
        return Client(address)  # timeout: dask config distributed.comm.timeouts.connect
    except (OSError, TimeoutError, ValueError) as exc:
        raise StitchError(
            f"cannot reach the dask.distributed scheduler at {address!r} "
            f"({type(exc).__name__}: {exc}); expected a running scheduler, e.g. tcp://HOST:8786"
        ) from exc


def compute_tasks(
    func: Callable,
    items: Sequence[Any],
    scheduler: str | Any = "threads",
    num_workers: int | None = None,
    on_done: Callable[[Any], None] | None = None,
) -> list[Any]:
    """Run ``func(item)`` for every item with dask, calling ``on_done(result)`` as each finishes.

    Parameters
    ----------
    scheduler : str or distributed.Client
        ``"threads"``, ``"processes"``, ``"sync"``/``"synchronous"``, a distributed scheduler
        address (``"tcp://host:8786"``) or a ``distributed.Client``.

    Returns
    -------
    list
        Results in the order of ``items``.

    Examples
    --------
    >>> compute_tasks(lambda v: v * 2, [1, 2, 3], "sync")
    [2, 4, 6]
    """
    import dask
    from dask.callbacks import Callback

    if not items:
        return []
    client = None
    if not isinstance(scheduler, str):
        client = scheduler
    elif scheduler not in LOCAL_SCHEDULERS:
        client = connect(scheduler)
    if client is not None:
        from distributed import as_completed

        futures = client.map(func, list(items), pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(items)
        for fut in as_completed(futures):
            results[index[fut.key]] = res = fut.result()
            if on_done is not None:
                on_done(res)
        if isinstance(scheduler, str):
            client.close()
        return results

    tasks = [dask.delayed(func, pure=False)(item) for item in items]
    keys = {t.key for t in tasks}

    class _Progress(Callback):
        def _posttask(self, key, result, dsk, state, id):  # noqa: A002 - dask's signature
            if on_done is not None and key in keys:
                on_done(result)

    kwargs: dict[str, Any] = {"scheduler": "sync" if scheduler.startswith("s") else scheduler}
    if num_workers is not None and scheduler in ("threads", "processes"):
        kwargs["num_workers"] = int(num_workers)
    with _Progress():
        return list(dask.compute(*tasks, **kwargs))
