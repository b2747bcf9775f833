"""The resume manifest of a block-wise job: which blocks of which phase are finished.

Written atomically (temporary sibling, then rename) next to the output as
``<output>.manifest.json``. A restarted job with the same fingerprint (same input, output,
model, window, decoder and block geometry) skips the blocks listed here; a different fingerprint
starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import StitchError

__all__ = ["PHASES", "Manifest", "fingerprint", "manifest_path"]

#: phases of a distributed job, in order
PHASES = ("blocks", "match", "relabel")
VERSION = 1


def manifest_path(output: Path) -> Path:
    """Where the manifest of a job writing ``output`` lives (next to it)."""
    return output.parent / f"{output.name}.manifest.json"


def fingerprint(params: Mapping[str, Any]) -> str:
    """A stable hash of JSON-able job parameters (sorted keys).

    Examples
    --------
    >>> fingerprint({"a": 1, "b": [2, 3]}) == fingerprint({"b": [2, 3], "a": 1})
    True
    """
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Manifest:
    """Finished blocks per phase of one job; ``save`` is atomic and throttled.

    Examples
    --------
    >>> m = Manifest(Path("/tmp/x.manifest.json"), "abc", {})
    >>> m.mark("blocks", 3); sorted(m.done["blocks"])
    [3]
    """

    path: Path
    fingerprint: str
    params: dict[str, Any]
    done: dict[str, set[int]] = field(default_factory=lambda: {p: set() for p in PHASES})
    status: str = "running"
    info: dict[str, Any] = field(default_factory=dict)
    _last_save: float = 0.0

    @classmethod
    def load_or_new(cls, path: Path, fp: str, params: dict[str, Any]) -> tuple[Manifest, bool]:
        """The manifest at ``path`` if it belongs to the job ``fp``, else a fresh one.

        Returns
        -------
        (manifest, resumed)
            ``resumed`` is True when an existing manifest of the same job was found.
        """
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise StitchError(
                    f"{path}: resume manifest is unreadable ({exc}); delete it to start over"
                ) from exc
            if data.get("version") == VERSION and data.get("fingerprint") == fp:
                done = {p: {int(i) for i in data.get("done", {}).get(p, [])} for p in PHASES}
                m = cls(path, fp, params, done, data.get("status", "running"), data.get("info", {}))
                return m, True
        return cls(path, fp, params), False

    def mark(self, phase: str, index: int) -> None:
        """Record block ``index`` of ``phase`` as finished (call :meth:`save` to persist)."""
        self.done[phase].add(int(index))

    def pending(self, phase: str, indices: Iterable[int]) -> list[int]:
        """The blocks of ``indices`` not yet finished in ``phase``."""
        return [i for i in indices if i not in self.done[phase]]

    def save(self, *, force: bool = True, every: float = 0.5) -> None:
        """Write atomically; with ``force=False`` at most once per ``every`` seconds."""
        now = time.monotonic()
        if not force and now - self._last_save < every:
            return
        data = {
            "version": VERSION,
            "fingerprint": self.fingerprint,
            "status": self.status,
            "params": self.params,
            "done": {p: sorted(self.done[p]) for p in PHASES},
            "info": self.info,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.parent / f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            tmp.write_text(json.dumps(data, indent=1, default=str))
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StitchError(f"{self.path}: cannot write the resume manifest ({exc})") from exc
        self._last_save = now
