"""Looking inside schemes and trained runs: what a positional scheme's hooks do before training and where a trained
model attends (positional.py), what a trained embedding table learned (embeddings.py), and loading a finished run
back with its data (trained.py)."""
