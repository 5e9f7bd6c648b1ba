"""Generation: sampling (temperature, top-k, top-p, greedy, stop strings), beam search and
interactive sessions."""
