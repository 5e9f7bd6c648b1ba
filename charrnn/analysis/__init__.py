"""Looking at models and runs: scoring (loss, bpc, dynamic evaluation), classification
metrics, inspection and its views (the HTML page's template in templates/), run history and
plots."""
