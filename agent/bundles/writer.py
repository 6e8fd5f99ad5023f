"""Write a stream of chunks to a file from a helper thread, so disk writes overlap hashing.

Measured (tests/benchmarks/bench_verify.py): writing the plain bundle in the verifying thread
costs about as much as SHA-256 itself; handing chunks to a writer thread keeps the pipeline near
the speed of the bare primitives. The queue is bounded (`depth` chunks), so memory stays flat.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from types import TracebackType
from typing import Final

DEFAULT_DEPTH: Final = 4


class BackgroundWriter:
    """`with BackgroundWriter(path) as out: out.write(chunk)`; the file is complete on exit.

    A write error surfaces at the next `write` or on exit as the original `OSError`.
    """

    def __init__(self, path: Path, depth: int = DEFAULT_DEPTH) -> None:
        self._file = path.open("wb")
        self._queue: queue.Queue[bytes | None] = queue.Queue(depth)
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._drain, name="otasim-writer", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        """Queue `data` (blocks while `depth` chunks are pending).

        Raises:
            OSError: an earlier write failed.
        """
        if self._error is not None:
            raise self._error
        if data:
            self._queue.put(data)

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._queue.put(None)
        self._thread.join()
        self._file.close()
        if exc is None and self._error is not None:
            raise self._error

    def _drain(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._file.write(data)
                except OSError as error:
                    self._error = error
