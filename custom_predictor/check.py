"""The kernel check: probe rows, the real estimator's answers from a low-priority child process, and an exact
comparison with the numpy kernel's.

Neighbours: `backends.kernel` runs it once the model is ready (the runtime hands over to scikit-learn on a
difference), with `backends.sklearn.reference_outputs` as the child's work; `kernels` is what it checks.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from custom_predictor.contract import Contract

PROBE_ROWS = 256
"""Synthetic rows (besides the self-test rows) on which the kernel is checked against the estimator."""
TIMEOUT_SECONDS = 600.0
"""The check's child process is killed (and the kernel left unchecked) after this long."""


def probe_matrix(contract: Contract, test_rows: list[dict[str, Any]], dtype: Any) -> Any:
    """The self-test rows plus rows spread over (and beyond) their range, seeded so every start is alike."""
    import numpy as np

    rows = [[r.get(n) for n in contract.input_names] for r in test_rows]
    base = np.array(rows, dtype=np.float64) if rows else np.zeros((1, len(contract.input_names)))
    base = np.nan_to_num(base)
    low, high = base.min(axis=0), base.max(axis=0)
    span = np.maximum(high - low, np.maximum(np.abs(high), 1.0))
    rng = np.random.default_rng(0)
    probe = rng.uniform(low - span, high + span, size=(PROBE_ROWS, len(contract.input_names)))
    for i, spec in enumerate(contract.inputs):
        if spec.type == "integer":
            probe[:, i] = np.round(probe[:, i])
        if spec.minimum is not None or spec.maximum is not None:
            probe[:, i] = np.clip(probe[:, i], spec.minimum, spec.maximum)
    return np.asfortranarray(np.concatenate([base, probe]).astype(dtype))


def run_in_child(fn: Any, args: tuple[Any, ...], timeout: float, cancel: threading.Event | None = None) -> Any:
    """`fn(*args)` in a spawned child process at low priority (nice 10). The child is killed when no answer came
    within `timeout` (TimeoutError), when `cancel` is set (CancelledError), and when this process dies."""
    import multiprocessing
    import os
    from concurrent.futures import CancelledError

    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(send, os.getpid(), fn, args), name="kernel-check", daemon=True)
    child.start()
    send.close()
    deadline = time.monotonic() + timeout
    try:
        while not receive.poll(0.1):
            if cancel is not None and cancel.is_set():
                raise CancelledError("the predictor is stopping")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer within {timeout:.0f} s")
        ok, value = receive.recv()
    except EOFError:
        raise RuntimeError("the child process died without an answer") from None
    finally:
        receive.close()
        if child.is_alive():
            child.kill()
        child.join(5)
    if not ok:
        raise RuntimeError(value)
    return value


def _child(send: Any, parent: int, fn: Any, args: tuple[Any, ...]) -> None:
    import ctypes
    import os
    import signal

    try:  # Linux: die with the parent, however it ends
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        pass
    if os.getppid() != parent:  # the parent ended while this process started
        return
    os.nice(10)  # leave the CPU to the requests being served
    try:
        send.send((True, fn(*args)))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which logs it
        send.send((False, f"{e.__class__.__name__}: {str(e)[:300]}"))
    finally:
        send.close()


def same(want: Any, have: Any) -> bool:
    """Kernel and estimator outputs are the same values, to the last bit (NaN equal to NaN)."""
    import numpy as np

    a, b = np.asarray(want), np.asarray(have)
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f" and b.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))
