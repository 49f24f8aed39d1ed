"""Files written whole: a reader, or a command interrupted midway, never sees half of one."""

import os


def write_atomically(path: str, content: bytes) -> None:
    """Writes `content` to `path` through a temporary file renamed into place.

    An interruption leaves `path` as it was, never half-written. The temporary file is
    named after the process, so that processes writing the same path do not write into
    one file, and it is removed on any failure.

    Args:
      path: file to write.
      content: its bytes.
    """
    temporary = f"{path}.{os.getpid()}.partial"
    try:
        with open(temporary, "wb") as file:
            file.write(content)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
