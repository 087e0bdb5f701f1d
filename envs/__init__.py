"""Task distributions and the batched environments that run them (design §4).

Use :func:`make` to build a distribution by family name and preset, :func:`names` to list them::

    from metarl.envs import make
    dist = make("navigation-2d")                 # the family's default preset
    tasks = dist.sample(20, split="train", rng=np.random.default_rng(0))
    env = dist.make_batched(tasks)

Families are imported lazily, so listing them never imports MuJoCo or Meta-World.
"""

from __future__ import annotations

from metarl.envs.registry import (
    GYM_IDS,
    Family,
    families,
    family,
    make,
    names,
    register_gymnasium_ids,
)

__all__ = ["GYM_IDS", "Family", "families", "family", "make", "names", "register_gymnasium_ids"]

register_gymnasium_ids()
