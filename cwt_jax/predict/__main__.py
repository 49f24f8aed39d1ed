"""`python -m cwt_jax.predict`: runs the command (`predict.command`)."""

from cwt_jax import cli
from cwt_jax.predict import command

if __name__ == "__main__":
    cli.run(command.main, command.define_flags)
