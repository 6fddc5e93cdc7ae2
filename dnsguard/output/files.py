"""Output files a command writes at the end of its work (summary, report, eval results,
model metadata): checked before the work starts, written without a traceback.

Example:
    >>> check_writable("/nonexistent-dir/summary.json", "summary")
    False
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path


def check_writable(path: str | Path | None, what: str) -> bool:
    """Before any work: can ``path`` be written? If not, one line on stderr names the path
    and the reason (no traceback after an hour's replay). Appending tests it without
    touching an existing file's content; a file made only for the test is removed."""
    if path is None or str(path) == "-":
        return True
    p = Path(path)
    existed = p.exists()
    try:
        with open(p, "a", encoding="utf-8"):
            pass
    except OSError as e:
        print(f"dnsguard: {p}: cannot write the {what}: {e.strerror or e}", file=sys.stderr)
        return False
    if not existed:
        with contextlib.suppress(OSError):
            p.unlink()
    return True


def write_json(path: str | Path, data: dict, what: str) -> bool:
    """Write ``data`` as JSON to ``path``; on failure one line on stderr, False."""
    try:
        Path(path).write_text(json.dumps(data, indent=2) + "\n")
    except OSError as e:
        print(f"dnsguard: {path}: cannot write the {what}: {e.strerror or e}", file=sys.stderr)
        return False
    return True
