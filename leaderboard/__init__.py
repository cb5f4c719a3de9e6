"""slimbench.leaderboard: a self-contained static site and reports built from MLflow runs.

Modules: `board` (rows, sections: what everything renders), `rows` (aggregate run.json records
over seeds, against the baseline, by the task's metric), `table` (one line per configuration,
batch sizes as columns: the HTML and Markdown tables), `site` (HTML site, `build_site`/`publish`),
`runpage` (one page per run), `plots` (SVG Pareto plots), `export` (Markdown/CSV/JSON), `command`
(the `slimbench leaderboard` subcommand). Nothing heavy is imported here, so the CLI stays fast.
"""
