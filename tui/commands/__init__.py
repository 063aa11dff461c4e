"""The Typer commands, one thin module per command or group: they check input, call the
runner, the study planner, the report or the dashboard, and print (tui/cli.py composes them)."""
