"""Decoder-only transformer: from a model config to a model (build.py), the model (transformer.py, the only place
positional hooks are called), attention (attention.py) and the dense layers and norms (layers.py)."""
