"""Dumps to S3, restores and swaps, WAL archive, PITR, local copies, DR drills, the agent."""
