"""The names of the learning choices, in a module that loads without torch.

The command line lists them in ``--help`` and checks them before any torch code is imported,
so that ``greenphase --help`` and a mistyped option answer at once.
"""

ALGOS = ("dqn", "ppo")
"""Learning algorithms."""
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop")
"""Optimizers (``torch.optim``)."""
SCHEDULES = ("constant", "step", "exponential", "cosine", "warmup-cosine")
"""Learning-rate schedules (``torch.optim.lr_scheduler``)."""
BATCH_MODES = ("full", "mini", "stochastic")
"""How many samples an update takes: all, a mini-batch, or one."""
FORMATS = ("torchscript", "onnx")
"""Export formats for edge devices."""
QUANTIZATIONS = ("int8",)
"""Quantisations besides full precision (fp32)."""
