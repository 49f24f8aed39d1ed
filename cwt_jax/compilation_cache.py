"""XLA's persistent compilation cache, which both commands (`main`, `predict`) keep.

A second run of the same shapes reads its programs from the cache instead of compiling
them (and, on GPU, autotuning their convolutions).
"""

import os

import jax

DEFAULT_DIR = "~/.cache/cwt_jax/xla"  # `compilation_cache_dir`, `--compilation_cache_dir`


def use(directory: str) -> None:
    """Keeps the programs this process compiles in `directory`; call it before any compile.

    Args:
      directory: the cache folder, `~` expanded; empty leaves JAX's own setting (no
        cache, unless JAX_COMPILATION_CACHE_DIR is set).
    """
    if not directory:
        return
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
    # Every program: on CPU the many short compilations add up.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
