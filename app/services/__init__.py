"""What both kinds of route (JSON and HTML) and the CLI call: resident models, runs and
labels, comparisons, jobs. No FastAPI request objects here."""
