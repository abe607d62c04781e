"""Research framework for the embedding layer of language models: token embeddings and positional encodings."""
