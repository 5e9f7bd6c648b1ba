"""Text to numbers: preprocessing, the vocabulary, corpora and their encoded cache, and the
exact text a run trains on."""
