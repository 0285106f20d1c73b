"""A user model for the CLI tests: ``--model tests/cli_model.py:classifier``."""

from tests import toys


def classifier():
    return toys.small_cnn()


def not_a_classifier():
    return "nope"
