"""The HTML pages and the htmx fragments they swap in."""
