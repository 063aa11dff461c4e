"""Every user-facing surface: the `diffbench` CLI and the Textual dashboard."""
