"""Where things are kept: the workspace, the job database, run records."""
