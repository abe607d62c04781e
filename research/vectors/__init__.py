"""Word vectors: reading word2vec / GloVe / fastText files (read.py, with text.py, binary.py, fasttext.py and the
shared base.py), writing them (write.py), aligning them to a tokenizer's vocabulary (align.py) and into a model's
embedding table (init.py), training them with gensim (train.py) and scoring them on analogies and word similarity
(intrinsic.py)."""
