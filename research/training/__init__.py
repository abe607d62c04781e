"""One run, start to finish: the training loop (loop.py: `train_and_evaluate`, `validate`) and what it is made of.

objective.py  the protocol an objective implements: what differs between a corpus LM (lm.py) and a synthetic
              task (task.py)
step.py       the jitted training step and the optimizer        loss.py      cross-entropy, plain and fused
evaluate.py   loss / perplexity / bits per byte over a split    checkpoint.py  Orbax checkpoints
metrics.py    metrics.jsonl                                     rundir.py    the run directory's files
faults.py     kill -9 a run at random moments and check that it resumes bit for bit
"""
