"""plankton.run.prefetch.ahead: work done ahead in a thread comes back in
order, failures come back as results, and stopping early stops the thread."""
import threading
import time

import pytest

from plankton.run.prefetch import ahead


def _slow_square(x):
    time.sleep(0.01)
    if x == 3:
        raise ValueError("three")
    return x * x


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_in_order_with_failures_as_results(depth):
    out = list(ahead(range(6), _slow_square, depth))
    assert [i for i, _, _ in out] == list(range(6))
    assert [r for i, r, _ in out if i != 3] == [0, 1, 4, 16, 25]
    assert isinstance(out[3][1], ValueError) and str(out[3][1]) == "three"
    assert all(s >= 0.01 for _, _, s in out)


def test_work_overlaps_the_consumer():
    """Six 50 ms jobs consumed by a 50 ms loop take about 0.35 s ahead, 0.6 s inline."""
    def job(x):
        time.sleep(0.05)
        return x

    def consume(depth):
        t = time.perf_counter()
        for _ in ahead(range(6), job, depth):
            time.sleep(0.05)
        return time.perf_counter() - t

    assert consume(2) < 0.8 * consume(0)


def test_stopping_early_stops_the_thread():
    seen = []

    def items():
        for i in range(1000):
            seen.append(i)
            yield i

    for i, _, _ in ahead(items(), lambda x: x, depth=2):
        if i == 5:
            break
    time.sleep(0.3)
    assert len(seen) < 12 and not any(t.name == "plankton-ahead" for t in threading.enumerate())


def test_a_failing_iterable_raises_where_it_is_consumed():
    def items():
        yield 1
        raise OSError("disk gone")

    it = ahead(items(), lambda x: x, depth=2)
    assert next(it)[0] == 1
    with pytest.raises(OSError, match="disk gone"):
        next(it)
