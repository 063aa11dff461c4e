"""`diffbench tui`: the live dashboard (Textual), reading the job database the workers write.

Textual-free modules: `state` (incremental reads → a `Snapshot`), `series` (curves),
`charts` (what the curves pane draws: seeds' mean ± std, EMA, x axes, reference, t-bins),
`preview` (vorticity pictures), `filters` (the `/` filter and sorting), `forms` (queue-form
validation). Textual modules: `app` (the app, layout, keys, refresh), `chart_keys` (the
curves' keys, mixed into the app), one module per pane (`runs_pane`, `curves_pane`,
`runtime_pane`, `vorticity_pane`, `workers_pane`), `dialogs`.
`command` is the Typer command; it imports Textual only when run.
"""
