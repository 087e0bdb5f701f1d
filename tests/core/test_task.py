"""Task values: array parameters frozen into hashable nested tuples of Python scalars."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from metarl.types import Task


@pytest.mark.parametrize(
    ("value", "frozen"),
    [
        (np.array([[0.5, -1.0], [2.0, 3.25]]), ((0.5, -1.0), (2.0, 3.25))),
        (np.arange(3, dtype=np.int32), (0, 1, 2)),
        (np.array(1.5, dtype=np.float32), 1.5),  # a 0-d array is its scalar
        (np.zeros((2, 0)), ((), ())),
        (np.zeros((0, 3)), ()),
        (np.array([[True, False]]), ((True, False),)),
        ([np.float64(1.0), (2, np.int64(3))], (1.0, (2, 3))),
        (np.float32(0.25), 0.25),
        ("name", "name"),
    ],
)
def test_parameters_freeze_to_nested_tuples_of_python_scalars(value, frozen):
    task = Task.make("fam", "p", "train", 0, x=value)
    stored = dict(task.params)["x"]
    assert stored == frozen
    assert repr(stored) == repr(frozen)  # Python ints, floats and bools, not numpy scalars
    hash(task)
    assert pickle.loads(pickle.dumps(task)) == task


def test_a_frozen_array_reads_back_as_the_same_array():
    rng = np.random.default_rng(0)
    transitions = rng.dirichlet(np.ones(10), size=(10, 5))
    task = Task.make("tabular-mdp", "n10", "train", 3, transitions=transitions)
    np.testing.assert_array_equal(task["transitions"], transitions)
    assert task == Task.make("tabular-mdp", "n10", "train", 3, transitions=transitions.copy())
