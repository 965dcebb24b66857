"""Child processes that do not run the parent's main script.

A ``spawn`` or ``forkserver`` child normally runs the parent's main script (or ``-m`` module) before its target, so
that objects defined there unpickle. This package's children (the critic process, the robustness workers) need
nothing from it, and running it again can do harm: a script without an ``if __name__ == "__main__":`` guard would
build its environments, open its robot's port or bind its learner's socket a second time in each child, then fail.
"""

from __future__ import annotations

import contextlib
import threading
from multiprocessing import spawn

_LOCK = threading.Lock()


@contextlib.contextmanager
def without_main_module():
    """Processes this thread starts inside the block leave the main module out.

    multiprocessing reads what a child imports from ``spawn.get_preparation_data`` when the process starts; for the
    block, and for this thread only, that leaves the main module out. Another thread starting a process meanwhile
    gets it as usual. (A forkserver's first start holds the block for the server's start-up.) Objects defined in
    the main script cannot reach such a child.
    """
    with _LOCK:
        original = spawn.get_preparation_data
        starter = threading.get_ident()

        def without_main(name):
            data = original(name)
            if threading.get_ident() == starter:
                data.pop("init_main_from_name", None)
                data.pop("init_main_from_path", None)
            return data

        spawn.get_preparation_data = without_main
        try:
            yield
        finally:
            spawn.get_preparation_data = original
