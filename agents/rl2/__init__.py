"""RL² (Duan et al. 2016): a GRU policy that adapts within a trial, trained with PPO over trials.

:mod:`metarl.agents.rl2.recurrent` holds the reusable recurrent core (input embeddings → GRU →
heads); :mod:`metarl.agents.rl2.agent` the agent.
"""

from metarl.agents.rl2.agent import RL2, RL2Config, RL2Network, RL2Policy
from metarl.agents.rl2.recurrent import RecurrentCore

__all__ = ["RL2", "RL2Config", "RL2Network", "RL2Policy", "RecurrentCore"]
