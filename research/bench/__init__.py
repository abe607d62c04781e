"""The benchmark (scripts/bench.py): a table of sections (sections.py) over the reference config (reference.py),
timed against the machine's measured limits (measure.py): training steps of every scheme (steps.py), where rope's
step goes (breakdown.py), the embedding's bandwidth (embedding.py), the vector reader against gensim (reader.py)
and the PyTorch peer (peer.py); rendered to results/bench/ (report.py)."""
