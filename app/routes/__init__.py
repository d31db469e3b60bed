"""HTTP routes: ``api/`` answers JSON under /api/v1, ``web/`` answers the htmx pages. One
module per resource; routes call services and analysis, never other routes."""
