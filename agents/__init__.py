"""Predictors of the ego's trajectory, reviewers for the review gate, and SB3 glue."""
