"""rpo-pipeline: a reproduction of 'Value-Free Policy Optimization via Reward Partitioning' (RPO)."""

__version__ = "0.1.0"

# When a step's `rpo` process started (seconds since the epoch), set by rpo.cli and carried into a warm child: the
# start of the step's MLflow run (rpo.tracking), so that the UI's Duration is the job's time.
JOB_STARTED = "RPO_JOB_STARTED"
