"""Counting XLA compilations through `jax.monitoring`, JAX's public event hooks."""

import contextlib

import jax

_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def counted():
    """Yields a list that gets one entry (its duration) per XLA compilation in the block."""
    compilations = []

    def listener(event, duration, **kwargs):
        if event == _BACKEND_COMPILE:
            compilations.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compilations
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
