"""Evaluation: ROC metrics, bootstrap intervals, breakdowns and their plots."""
