"""metarl: meta-reinforcement learning on gymnasium, MuJoCo and Meta-World.

The core package holds what every algorithm shares: the data types and protocols
(:mod:`metarl.types`), the sampler, the maths of returns and trust regions, evaluation,
configs, the trainer, logging and checkpoints. Task distributions live in
:mod:`metarl.envs`, algorithms in :mod:`metarl.agents`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
