"""XLA compilation: the persistent cache both commands keep, and what building programs costs.

A second run of the same shapes reads its programs from the cache instead of compiling
them (and, on GPU, autotuning their convolutions). `recorded` counts the programs a
block of code builds, through `jax.monitoring`'s events.
"""

import contextlib
import dataclasses
import os
from collections.abc import Iterator

import jax

DEFAULT_CACHE_DIR = "~/.cache/cwt_jax/xla"  # `compilation_cache_dir`, `--compilation_cache_dir`

# Each program's XLA compilation, or its read from the persistent cache where it is there.
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT = "/jax/compilation_cache/cache_hits"
# Tracing a function to a jaxpr, and lowering it to StableHLO.
_TRACING = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
)


def use_cache(directory: str) -> None:
    """Keeps the programs this process compiles in `directory`; call it before any compile.

    Args:
      directory: the cache folder, `~` expanded; empty disables the cache, even where
        JAX_COMPILATION_CACHE_DIR names one.
    """
    if not directory:
        jax.config.update("jax_enable_compilation_cache", False)
        return
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
    # Every program: on CPU the many short compilations add up.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@dataclasses.dataclass
class Compilations:
    """The programs built in a block (`recorded`).

    Attributes:
      durations: seconds of each program's XLA compilation, or of its read from the
        persistent compilation cache.
      cache_hits: how many of them were read from the persistent compilation cache.
      tracing_s: seconds spent tracing functions and lowering them for XLA.
    """

    durations: list[float] = dataclasses.field(default_factory=list)
    cache_hits: int = 0
    tracing_s: float = 0.0

    def summary(self) -> dict[str, float]:
        """{"programs", "compile_s", "cache_hits", "tracing_s"}, seconds rounded to 0.1."""
        return {
            "programs": len(self.durations),
            "compile_s": round(sum(self.durations), 1),
            "cache_hits": self.cache_hits,
            "tracing_s": round(self.tracing_s, 1),
        }


@contextlib.contextmanager
def recorded() -> Iterator[Compilations]:
    """Yields a `Compilations` that the programs built in the block are added to.

    Every thread's compilations count, so blocks should not overlap.
    """
    compilations = Compilations()

    def on_duration(event: str, duration: float, **kwargs) -> None:
        if event == _BACKEND_COMPILE:
            compilations.durations.append(duration)
        elif event in _TRACING:
            compilations.tracing_s += duration

    def on_event(event: str, **kwargs) -> None:
        if event == _CACHE_HIT:
            compilations.cache_hits += 1

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    try:
        yield compilations
    finally:
        jax.monitoring.unregister_event_duration_listener(on_duration)
        jax.monitoring.unregister_event_listener(on_event)
