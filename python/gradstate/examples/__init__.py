"""End-to-end examples that ship with gradstate: ``python -m gradstate.examples.train_digits``."""
