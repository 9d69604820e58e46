"""rpo-pipeline: a reproduction of 'Value-Free Policy Optimization via Reward Partitioning' (RPO)."""

__version__ = "0.1.0"
