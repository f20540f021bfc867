"""Offline evaluation: next-item prediction on a recorded event file (`recsrv evaluate`).

`dataset` reads and splits the file, `baselines` holds the reference algorithms,
`metrics` the arithmetic, `runner` replays the events through recsrv's own model and
the baselines side by side, `command` is the CLI and its report. None of it is on
the serving path.
"""
