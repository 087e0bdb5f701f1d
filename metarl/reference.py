"""Published numbers our reproductions are compared against (../shared papers table, [T] rows only).

Keys are (agent family, env family, preset); values are short strings shown beside our results by
``metarl compare``. Only exact numbers from papers' tables are listed.
"""

from __future__ import annotations

__all__ = ["PAPER_NUMBERS", "paper_numbers"]


#: (agent, env, preset) -> the paper's numbers, as shown.
PAPER_NUMBERS: dict[tuple[str, str, str], str] = {
    # Finn et al. 2017, App. C Table 4: return after 0/1/2/3 gradient steps.
    ("maml-trpo", "navigation-2d", "maml"): "MAML (Finn et al. 2017, Table 4): -40.41 / -11.68 / -3.33 / -3.23",
    # Finn et al. 2017, App. C Table 5.
    ("maml-trpo", "halfcheetah-dir", "maml"): "MAML (Finn et al. 2017, Table 5): -50.69 / 293.19 / 313.48 / 315.65",
    # Duan et al. 2016, Table 1: total reward per trial (random / Gittins in brackets).
    ("rl2", "bandit", "k5-n10"): "RL² 6.7 (random 5.0, Gittins 6.6); Duan et al. 2016 Table 1",
    ("rl2", "bandit", "k10-n10"): "RL² 6.7 (random 5.0, Gittins 6.6)",
    ("rl2", "bandit", "k50-n10"): "RL² 6.8 (random 5.1, Gittins 6.5)",
    ("rl2", "bandit", "k5-n100"): "RL² 78.7 (Gittins 78.3, UCB1 78.0)",
    ("rl2", "bandit", "k10-n100"): "RL² 83.5 (Gittins 82.8, UCB1 82.4)",
    ("rl2", "bandit", "k50-n100"): "RL² 84.9 (Gittins 85.2, UCB1 84.3)",
    ("rl2", "bandit", "k5-n500"): "RL² 401.6 (random 249.8, Gittins 405.8)",
    ("rl2", "bandit", "k10-n500"): "RL² 432.5 (random 249.0, Gittins 437.8)",
    ("rl2", "bandit", "k50-n500"): "RL² 438.9 (random 249.6, Gittins 463.7)",
    # Duan et al. 2016, Table 2: total reward per trial (random in brackets).
    ("rl2", "tabular-mdp", "n10"): "RL² 156.2 (random 100.1, PSRL 138.1); Duan et al. 2016 Table 2",
    ("rl2", "tabular-mdp", "n25"): "RL² 445.7 (random 250.2)",
    ("rl2", "tabular-mdp", "n50"): "RL² 936.1 (random 499.7)",
    ("rl2", "tabular-mdp", "n75"): "RL² 1428.8 (random 749.9)",
    ("rl2", "tabular-mdp", "n100"): "RL² 1913.7 (random 999.4)",
}


def paper_numbers(agent: str, env: str, preset: str) -> str:
    """The published numbers for this setting, or an empty string."""
    return PAPER_NUMBERS.get((agent, env, preset), "")
