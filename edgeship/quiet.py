"""Keep converters' native chatter (C++ logs, deprecation warnings) out of the user's terminal."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from typing import Iterator, List


@contextlib.contextmanager
def captured_native_output(lines: List[str]) -> Iterator[None]:
    """Redirect file descriptors 1 and 2 (where C++ code writes) into ``lines``.

    The text is kept, not dropped: callers add its tail to an error when the step fails.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    absl = logging.getLogger("absl")
    level = absl.level
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        absl.setLevel(logging.ERROR)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            absl.setLevel(level)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())
