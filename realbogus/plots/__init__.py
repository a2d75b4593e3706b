"""Plots shared by reports, notebooks and the figure scripts."""
