"""One root seed derives every generator (design §4): no code touches numpy's or torch's global RNG.

Streams are named, so adding a consumer never shifts the numbers another consumer sees.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

__all__ = ["derive_seed", "numpy_rng", "torch_generator"]


def derive_seed(root_seed: int, *names: str | int) -> int:
    """A 63-bit seed for the stream ``names`` under ``root_seed``, stable across processes."""
    key = ":".join([str(int(root_seed)), *map(str, names)]).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def numpy_rng(root_seed: int, *names: str | int) -> np.random.Generator:
    """A numpy ``Generator`` for the named stream."""
    return np.random.default_rng(derive_seed(root_seed, *names))


def torch_generator(root_seed: int, *names: str | int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch ``Generator`` for the named stream on ``device``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(root_seed, *names))
    return gen
