"""Figures: plotly builders that turn analysis results into figures (no torch, no models), and the HTML report."""
