"""The run folder and its plumbing: its file names and layout, its lock, its epoch log, listing runs."""
