"""The callbacks Orthanc runs on its own threads keep their Python thread state (thread_state.py)."""

from __future__ import annotations

import ctypes
import threading

from support import fake_orthanc

fake_orthanc.install()

from bodypart_router.orthanc_plugin import thread_state  # noqa: E402


def test_the_wrapped_callback_gets_its_arguments_and_gives_its_result() -> None:
    def callback(change_type: int, level: int, resource: str) -> str:
        """Orthanc's OnChange signature."""
        return f"{change_type}/{level}/{resource}"

    wrapped = thread_state.keeping_thread_state(callback)
    assert wrapped(1, 2, "abc") == "1/2/abc"
    assert wrapped.__doc__ == callback.__doc__


def test_the_state_is_kept_once_per_thread() -> None:
    """PyGILState_Ensure is taken once per thread, not once per call: a thread that stored
    thousands of instances holds one extra count, not thousands."""
    calls: list[int] = []
    real = ctypes.pythonapi.PyGILState_Ensure

    class Counting:
        def __call__(self) -> int:
            calls.append(threading.get_ident())
            return real()

    together = threading.Barrier(3)  # all alive at once, so that no two share an ident

    def many_calls() -> None:
        for _ in range(100):
            thread_state.keep_thread_state()
        together.wait(10)

    original = ctypes.pythonapi.PyGILState_Ensure
    try:
        ctypes.pythonapi.PyGILState_Ensure = Counting()  # type: ignore[misc]
        workers = [threading.Thread(target=many_calls) for _ in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(10)
    finally:
        ctypes.pythonapi.PyGILState_Ensure = original  # type: ignore[misc]
    assert len(calls) == 3 and len(set(calls)) == 3
