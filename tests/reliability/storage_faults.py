"""`python storage_faults.py MODE gani-args...`: the `gani` command line with the output
store failing the way a full or read-only disk does (tests/reliability/test_usage_errors.py).

    MODE  big:ENO     every write of more than 4 KiB under the output root fails with errno
                      ENO (images, latents, tuned results), small JSON files still go in:
                      the images fail `storage_error`, summary.json is written
          after:N:ENO after N writes under the output root every write fails with ENO:
                      the run stops (summary.json cannot be written)

Every write of the pipeline goes through `gani.io.write_bytes`; the fault is raised there,
as the kernel's OSError would be."""
from __future__ import annotations

import errno
import os
import sys


def install(mode: str, out: str) -> None:
    from gani import io

    kind, *rest = mode.split(":")
    code = getattr(errno, rest[-1])
    limit = int(rest[0]) if kind == "after" else 0
    real = io.write_bytes
    count = {"n": 0}
    root = os.path.abspath(out)

    def write_bytes(uri, data, *a, **k):
        if os.path.abspath(str(uri)).startswith(root + os.sep):
            count["n"] += 1
            if (kind == "big" and len(data) > 4096) or (kind == "after"
                                                        and count["n"] > limit):
                raise OSError(code, os.strerror(code), str(uri))
        return real(uri, data, *a, **k)

    io.write_bytes = write_bytes


if __name__ == "__main__":
    mode, argv = sys.argv[1], sys.argv[2:]
    install(mode, argv[argv.index("--out") + 1])
    from cli.main import main

    sys.exit(main(argv))
