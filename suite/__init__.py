"""suite: does distillation make a neural network harder to attack?"""

__version__ = "0.1.0"
