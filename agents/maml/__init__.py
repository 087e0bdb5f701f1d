"""The MAML family: MAML-TRPO (exact second-order, vectorised across tasks), first-order MAML
(``MAMLTRPO`` with ``first_order=True``), MAML-PPO and Reptile.

Build one as the command line does::

    from metarl.agents.maml import MAMLTRPO
    agent = MAMLTRPO(MAMLTRPO.Config(), dist=dist, device=torch.device("cpu"), seed=0)
"""

from metarl.agents.maml.adaptation import (
    AdaptationStep,
    TaskData,
    adapt_params,
    adaptation_path,
    inner_gradients,
    inner_step,
    meta_kl_hessian_vector_product,
    reinforce_loss,
    stack_params,
    task_data,
)
from metarl.agents.maml.agent import (
    MAMLPPO,
    MAMLTRPO,
    AdaptationConfig,
    MAMLAgent,
    MAMLPPOConfig,
    MAMLTRPOConfig,
    Reptile,
    ReptileConfig,
)
from metarl.agents.maml.policy import (
    GaussianMLP,
    MAMLPolicy,
    gaussian_kl,
    gaussian_log_prob,
    task_distributions,
)

__all__ = [
    "AdaptationConfig",
    "AdaptationStep",
    "GaussianMLP",
    "MAMLAgent",
    "MAMLPPO",
    "MAMLPPOConfig",
    "MAMLPolicy",
    "MAMLTRPO",
    "MAMLTRPOConfig",
    "Reptile",
    "ReptileConfig",
    "TaskData",
    "adapt_params",
    "adaptation_path",
    "gaussian_kl",
    "gaussian_log_prob",
    "inner_gradients",
    "inner_step",
    "meta_kl_hessian_vector_product",
    "reinforce_loss",
    "stack_params",
    "task_data",
    "task_distributions",
]
