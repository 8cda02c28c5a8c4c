"""The pipeline's gates, their argv and summaries."""
