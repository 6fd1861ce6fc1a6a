"""Evaluation: the Chinese STS/matching suite of the seed card, and its speed table."""
