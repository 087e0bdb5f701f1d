"""Helpers shared by every family's batched env: action validation and per-slot seeding."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from metarl.errors import EnvError

__all__ = ["check_actions", "slot_seeds", "reset_mask"]


def check_actions(actions: object, space: gym.Space, num_slots: int) -> np.ndarray:
    """Validate a batch of actions for ``num_slots`` slots of ``space``; return it as an array.

    Raises:
        EnvError: not real numbers (strings, objects, complex or bool), wrong shape, non-integer
            discrete actions, out-of-range discrete actions, or NaN/inf continuous actions. The
            message names the offending value.
    """
    arr = np.asarray(actions)
    if arr.dtype.kind not in "iuf":
        raise EnvError(f"actions must be integers or floats, got an array of dtype {arr.dtype}")
    if isinstance(space, gym.spaces.Discrete):
        expected: tuple[int, ...] = (num_slots,)
        if arr.shape != expected:
            raise EnvError(
                f"actions must have shape {expected} for {num_slots} slots of {space}, got {arr.shape}"
            )
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise EnvError(
                    f"discrete actions must be integers, got {arr[np.argmax(arr != np.round(arr))]!r}"
                )
            arr = arr.astype(np.int64)
        bad = (arr < space.start) | (arr >= space.start + space.n)
        if bad.any():
            raise EnvError(
                f"discrete action {int(arr[bad][0])} out of range [{space.start}, {space.start + space.n}) in slot {int(np.argmax(bad))}"
            )
        return arr
    if isinstance(space, gym.spaces.Box):
        expected = (num_slots, *space.shape)
        if arr.shape != expected:
            raise EnvError(
                f"actions must have shape {expected} for {num_slots} slots of {space}, got {arr.shape}"
            )
        arr = arr.astype(space.dtype, copy=False)
        finite = np.isfinite(arr)
        if not finite.all():
            slot = int(np.argwhere(~finite)[0][0])
            raise EnvError(f"action of slot {slot} is not finite: {arr[slot].tolist()}")
        return arr
    raise EnvError(f"unsupported action space {space}")


def is_integer(value: object) -> bool:
    """Whether ``value`` is a Python or numpy integer (a bool is not)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def slot_seeds(seed: int | Sequence[int] | None, num_slots: int) -> list[int | None]:
    """Per-slot seeds: one int ``s`` gives ``s + i`` to slot ``i``; a sequence is used as is.

    Raises:
        EnvError: a seed that is not an integer (a float, string or bool), or a sequence whose
            length is not ``num_slots``.
    """
    if seed is None:
        return [None] * num_slots
    if isinstance(seed, np.ndarray) and seed.ndim == 0:
        seed = seed[()]
    if is_integer(seed):
        return [int(seed) + i for i in range(num_slots)]
    if isinstance(seed, (str, bytes)) or not isinstance(seed, (Sequence, np.ndarray)):
        raise EnvError(f"seed must be an integer, one integer per slot, or None, got {seed!r}")
    for i, s in enumerate(seed):
        if not is_integer(s):
            raise EnvError(f"seeds must be integers, got {s!r} for slot {i}")
    seeds = [int(s) for s in seed]
    if len(seeds) != num_slots:
        raise EnvError(f"expected {num_slots} seeds, one per slot, got {len(seeds)}")
    return seeds


def nonnegative_slot_seeds(seed: int | Sequence[int] | None, num_slots: int) -> list[int | None]:
    """:func:`slot_seeds`, refusing a negative seed (``gymnasium.utils.seeding`` needs
    non-negative ones) with a one-line error naming the slot."""
    seeds = slot_seeds(seed, num_slots)
    negative = [(i, s) for i, s in enumerate(seeds) if s is not None and s < 0]
    if negative:
        raise EnvError(
            f"seeds must be non-negative integers, got {negative[0][1]} for slot {negative[0][0]}"
        )
    return seeds


def reset_mask(mask: np.ndarray | None, num_slots: int) -> np.ndarray:
    """A boolean ``[num_slots]`` reset mask (all slots when ``None``)."""
    if mask is None:
        return np.ones(num_slots, dtype=bool)
    m = np.asarray(mask, dtype=bool)
    if m.shape != (num_slots,):
        raise EnvError(f"reset mask must have shape ({num_slots},), got {m.shape}")
    return m
