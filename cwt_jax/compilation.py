"""XLA compilation: the persistent cache, the deterministic mode's flags, and their costs.

A second run of the same shapes reads its programs from the cache instead of compiling
them (and, on GPU, autotuning their convolutions). `use_deterministic_mode` makes CPU
results independent of the CPU (`config.deterministic`). `recorded` counts the programs
a block of code builds, through `jax.monitoring`'s events.
"""

import contextlib
import dataclasses
import os
from collections.abc import Iterator

import jax
from jax._src import xla_bridge

from cwt_jax import errors

DEFAULT_CACHE_DIR = "~/.cache/cwt_jax/xla"  # `compilation_cache_dir`, `--compilation_cache_dir`

# `config.deterministic`: XLA:CPU programs whose results do not depend on the CPU's
# instruction set or core count, each flag found by measurement (docs/reproducing.md).
DETERMINISTIC_XLA_FLAGS = (
    # No YNNPACK: its dot and convolution kernels are chosen per CPU (an AVX2-only CPU gets
    # other bits than an AVX-512 one) and its reductions split their sums by the thread
    # count. XLA's own code and Eigen's take their place.
    "--xla_cpu_experimental_ynn_fusion_type=",
    # XLA's own code vectorised for the same instructions on every x86-64 CPU since 2013
    # (AVX2 and FMA), whatever the CPU has beyond them, at one vector width.
    "--xla_cpu_max_isa=AVX2",
    "--xla_cpu_prefer_vector_width=256",
    # Functions (exp, tanh, ...) approximated alike on every CPU: XLA's help says its
    # default gives "faster code at the expense of consistent results across CPUs".
    "--xla_cpu_enable_platform_dependent_math=false",
)
_deterministic_backend = False  # whether `use_deterministic_mode` started JAX's backend


def use_deterministic_mode() -> None:
    """Starts JAX's CPU backend with `DETERMINISTIC_XLA_FLAGS` and one compute thread.

    The flags go after XLA_FLAGS's own (so they win). Eigen splits a dot's sums by the
    number of threads of XLA's pool, which is the number of cores the process may use
    when the backend starts: the backend starts on one core, and the process gets its
    cores back for everything else (data loading, the host's work).

    Raises:
      ConfigError: JAX's backend started before, or the system cannot pin threads.
    """
    global _deterministic_backend
    if _deterministic_backend:
        return
    if xla_bridge.backends_are_initialized():
        raise errors.ConfigError(
            "deterministic=True must start JAX's backend, which has started already: call "
            "cwt_jax.compilation.use_deterministic_mode() before any JAX computation."
        )
    if not hasattr(os, "sched_setaffinity"):
        raise errors.ConfigError(
            "deterministic=True pins XLA's threads to one core, which needs Linux's "
            "sched_setaffinity; run without it on this system."
        )
    flags = os.environ.get("XLA_FLAGS", "").split()
    os.environ["XLA_FLAGS"] = " ".join([*flags, *DETERMINISTIC_XLA_FLAGS])
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    try:
        jax.devices()  # XLA reads its flags and makes its thread pool, of one thread
    finally:
        os.sched_setaffinity(0, cores)
    _deterministic_backend = True


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


def use_deterministic_flags() -> None:
    """Puts `DETERMINISTIC_XLA_FLAGS` in force, after XLA_FLAGS's own (so they win).

    XLA reads its flags once, when JAX starts its backend: the programs call this first.

    Raises:
      ConfigError: JAX's backend started before, without the flags in XLA_FLAGS.
    """
    flags = os.environ.get("XLA_FLAGS", "").split()
    if all(flag in flags for flag in DETERMINISTIC_XLA_FLAGS):
        return
    if xla_bridge.backends_are_initialized():
        raise errors.ConfigError(
            "deterministic=True sets XLA flags, which JAX has read already: call "
            "cwt_jax.compilation.use_deterministic_flags() before any JAX computation, or "
            f"set XLA_FLAGS='{' '.join(DETERMINISTIC_XLA_FLAGS)}' before starting Python."
        )
    os.environ["XLA_FLAGS"] = " ".join([*flags, *DETERMINISTIC_XLA_FLAGS])


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
