"""Giving a finished file its final name without ever replacing another file."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


def claim_name(source: str | os.PathLike, target: str | os.PathLike) -> bool:
    """Give `source`'s content the name `target` unless that name exists (False then).

    A hard link is atomic and refuses to replace an existing file, so two processes picking the
    same numbered name never overwrite each other. On a filesystem without hard links the content
    is copied into an exclusively created file instead (still never replacing one).
    """
    try:
        os.link(source, target)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
    try:
        with open(Path(target), "xb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out)
        return True
    except FileExistsError:
        return False
