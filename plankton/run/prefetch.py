"""Work ahead in a thread: decoding frame n+1 while the models run on frame
n. JPEG decoding (Pillow, OpenCV) releases the GIL, so on two cores the
decode hides behind the networks instead of adding to them."""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_DONE = object()


def ahead(items: Iterable, fn: Callable[[Any], Any], depth: int = 2) -> Iterator[tuple[Any, Any, float]]:
    """(item, fn(item) or the exception it raised, seconds fn took) per
    item, in order. With ``depth`` > 0 a thread runs ``fn`` (and draws from
    ``items``) up to ``depth`` items ahead; 0 runs it inline. Stopping early
    (break, an exception) stops the thread too."""

    def one(item):
        t = time.perf_counter()
        try:
            out = fn(item)
        except Exception as e:  # handed over in order, as a result
            out = e
        return item, out, time.perf_counter() - t

    if depth <= 0:
        for item in items:
            yield one(item)
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(x) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in items:
                if stop.is_set() or not put(one(item)):
                    return
        except BaseException as e:  # the iterable itself failed: raised where it is consumed
            put(e)
            return
        put(_DONE)

    thread = threading.Thread(target=work, name="plankton-ahead", daemon=True)
    thread.start()
    try:
        while (x := q.get()) is not _DONE:
            if isinstance(x, BaseException):
                raise x
            yield x
    finally:
        stop.set()
        thread.join(timeout=5)
