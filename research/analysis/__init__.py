"""Looking inside schemes and trained runs: the contract a positional scheme must meet, checkable on any scheme
(contract.py), what a scheme's hooks do before training and where a trained model attends (positional.py), what a
trained embedding table learned (embeddings.py), and loading a finished run back with its data (trained.py)."""
