"""Meta-RL algorithms, one folder per family (design §2): ``maml/``, ``rl2/``, ``varibad/``."""

__all__: list[str] = []
