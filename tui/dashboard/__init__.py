"""`diffbench tui`: the live dashboard (Textual), reading the job database the workers write.

Textual-free modules: `state` (incremental reads → a `Snapshot`), `series` (curves),
`preview` (vorticity pictures), `filters` (the `/` filter and sorting), `forms` (queue-form
validation). Textual modules: `app` (the app, layout, keys, refresh), one module per pane
(`runs_pane`, `curves_pane`, `runtime_pane`, `vorticity_pane`, `workers_pane`), `dialogs`.
`command` is the Typer command; it imports Textual only when run.
"""
