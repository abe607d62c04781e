"""Length-generalisation tasks: framing, shapes, and answers checked by independent brute force."""

from __future__ import annotations

import numpy as np
import pytest

from research.data.tasks import FIRST, PAD, SEP, TASKS, accuracy


def decode(batch, i):
    """(input symbols, output symbols) of example i, from the framed arrays."""
    seq = np.concatenate([batch.inputs[i, :1], batch.targets[i]])
    sep = int(np.where(seq == SEP)[0][0])
    out = seq[sep + 1 :]
    out_mask = batch.mask[i, sep:]
    return seq[:sep] - FIRST, out[out_mask > 0] - FIRST


@pytest.mark.parametrize("name", TASKS.names())
@pytest.mark.parametrize("length", [1, 5, 12])
def test_framing(name, length):
    task = TASKS.get(name)()
    batch = task.sample(np.random.default_rng(0), 8, length)
    assert batch.inputs.shape == batch.targets.shape == batch.mask.shape
    assert batch.inputs.dtype == np.int32 and batch.mask.dtype == np.float32
    np.testing.assert_array_equal(batch.inputs[:, 1:], batch.targets[:, :-1])  # shifted by one
    assert batch.mask.sum() > 0 and np.all(batch.targets[batch.mask > 0] >= FIRST)
    assert batch.targets.max() < task.vocab_size and not np.any(batch.targets[batch.mask > 0] == PAD)


def test_answers_by_brute_force():
    rng = np.random.default_rng(1)
    b = TASKS.get("reverse_string")().sample(rng, 4, 7)
    for i in range(4):
        x, y = decode(b, i)
        np.testing.assert_array_equal(y, x[::-1])
    b = TASKS.get("duplicate_string")().sample(rng, 4, 5)
    x, y = decode(b, 0)
    np.testing.assert_array_equal(y, np.concatenate([x, x]))
    b = TASKS.get("bucket_sort")().sample(rng, 4, 9)
    x, y = decode(b, 2)
    np.testing.assert_array_equal(y, sorted(x))
    b = TASKS.get("parity_check")().sample(rng, 16, 9)
    for i in range(16):
        x, y = decode(b, i)
        assert y.tolist() == [x.sum() % 2]
    b = TASKS.get("binary_addition")().sample(rng, 16, 11)
    for i in range(16):
        x, y = decode(b, i)
        plus = int(np.where(x == 2)[0][0])
        a = int("".join(map(str, x[:plus][::-1])), 2)
        c = int("".join(map(str, x[plus + 1 :][::-1])), 2)
        assert int("".join(map(str, y[::-1])), 2) == a + c
    b = TASKS.get("modular_arithmetic")().sample(rng, 16, 9)
    ops = {5: "+", 6: "-", 7: "*"}
    for i in range(16):
        x, y = decode(b, i)
        expr = "".join(str(v) if v < 5 else ops[v] for v in x)
        assert y.tolist() == [eval(expr) % 5], expr  # Python precedence is the reference
    b = TASKS.get("missing_duplicate")().sample(rng, 16, 10)
    for i in range(16):
        x, y = decode(b, i)
        first, second = x[:5], x[5:]
        blank = int(np.where(second == 2)[0][0])
        assert y.tolist() == [first[blank]]
    b = TASKS.get("associative_recall")().sample(rng, 16, 9)
    for i in range(16):
        x, y = decode(b, i)
        pairs = dict(zip(x[0:-1:2], x[1:-1:2]))
        assert y.tolist() == [pairs[x[-1]]]


def test_accuracy_counts_only_outputs():
    b = TASKS.get("reverse_string")().sample(np.random.default_rng(0), 4, 6)
    perfect = np.where(b.mask > 0, b.targets, 0)
    assert accuracy(perfect, b) == {"token_accuracy": 1.0, "sequence_accuracy": 1.0}
    wrong = perfect.copy()
    wrong[0, -1] = 0
    acc = accuracy(wrong, b)
    assert acc["sequence_accuracy"] == 0.75 and acc["token_accuracy"] == pytest.approx(23 / 24)
