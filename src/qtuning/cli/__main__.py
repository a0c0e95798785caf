"""`python -m qtuning.cli ...` (torchrun and accelerate launch use this form): the `qtuning` program."""

from .main import entry_point

if __name__ == "__main__":
    entry_point()
