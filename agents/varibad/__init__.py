"""VariBAD (Zintgraf et al. 2020): PPO on a learned belief over tasks, with a VAE that infers it.

:mod:`~metarl.agents.varibad.encoder` holds the recurrent belief encoder,
:mod:`~metarl.agents.varibad.decoder` the reward/state/task decoders,
:mod:`~metarl.agents.varibad.vae` the ELBO and the trial buffer,
:mod:`~metarl.agents.varibad.agent` the agent, and :mod:`~metarl.agents.varibad.bayes_optimal`
the exact Bayes-optimal return of VariBAD's gridworld.
"""

from metarl.agents.varibad.agent import VariBAD, VariBADNetwork, VariBADPolicy
from metarl.agents.varibad.bayes_optimal import random_policy_returns, solve_gridworld
from metarl.agents.varibad.config import VariBADConfig
from metarl.agents.varibad.encoder import BeliefEncoder, consecutive_kls, gaussian_kl

__all__ = [
    "VariBAD",
    "VariBADConfig",
    "VariBADNetwork",
    "VariBADPolicy",
    "BeliefEncoder",
    "gaussian_kl",
    "consecutive_kls",
    "solve_gridworld",
    "random_policy_returns",
]
