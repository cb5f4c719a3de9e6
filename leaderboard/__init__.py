"""slimbench.leaderboard: a self-contained static site and reports built from MLflow runs.

Modules: `rows` (load run.json records, aggregate over seeds), `site` (HTML site, run pages,
`build_site`/`publish`), `plots` (SVG Pareto plots), `export` (Markdown/CSV/JSON), `command`
(the `slimbench leaderboard` subcommand). Nothing heavy is imported here, so the CLI stays fast.
"""
