"""Looking at models and runs: scoring (loss, bpc, dynamic evaluation), classification
metrics, inspection and its views, run history and plots."""
