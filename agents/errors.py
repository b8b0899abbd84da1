"""Errors for bad input to the agents package (no torch import, so the CLI starts fast)."""


class UnknownControllerError(ValueError):
    """A controller name that does not exist; the message is one line."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or is not greenphase's; the message is one line."""


class TrainedPolicyError(ValueError):
    """A run that holds no usable policy, or one trained for another network."""


class ConfigError(ValueError):
    """A learner, optimiser or training setting is invalid; the one-line message names the key."""
