"""Generation: sampling (temperature, top-k, top-p, greedy, stop strings), beam search and
interactive sessions.

A `SampleConfig` is checked once, where a user's options come in (`validate_sample_config` in
the commands and the API; the server checks its requests in serve/protocol.py); the code here
trusts it."""
