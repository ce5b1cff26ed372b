"""The weekly rotation report: one self-contained HTML file plus a Markdown summary."""
