"""Quality on the committed synthetic files, in the file's order and sorted by time.

Each file (a few hundred events from scripts/synthetic_events.py, grouped by session)
has one kind of signal: `sequential_small` a chain of successors, where sequential
rules (SR) are the strong baseline, and `cooccurrence_small` baskets without order,
where neighbour sessions (V-SKNN) are. recsrv must keep up with both, whatever the
order of the file, with one configuration and weights it learns from the stream.

On files this small one prediction is about 1% of HR@20, and the blend has only a
few hundred events to learn its weights from: measured, recsrv is between 9% below
(MRR@20 on `cooccurrence_small` sorted by time, .408 against V-SKNN's .446) and 1%
above the better of the two. So the bound here is 90% of the better of SR and V-SKNN
on each metric: a model that loses a signal (no sequence, no neighbour sessions)
falls far below it. docs/quality.md gives the figures on larger streams.
"""

from pathlib import Path

import pytest

from recsrv.config import ModelConfig, SessionsConfig
from recsrv.evaluation.dataset import read_events, select_test_sessions
from recsrv.evaluation.runner import evaluate

DATA = Path(__file__).resolve().parents[1] / "data"
SHARE = 0.9


@pytest.mark.parametrize("order", ["file", "time"])
@pytest.mark.parametrize("name", ["sequential_small", "cooccurrence_small"])
def test_recsrv_keeps_up_with_sr_and_vsknn(name: str, order: str) -> None:
    data = read_events(DATA / f"{name}.jsonl")
    test = select_test_sessions(data, "time:0.7")
    outcome = evaluate(
        data, test, 20, ModelConfig(), SessionsConfig(), order=order, baselines=["sr", "vsknn"]
    )
    assert outcome.n >= 80  # enough predictions to mean something
    if order == "file":
        assert outcome.out_of_order > 0  # the file really is out of ts order
    results = outcome.results
    ours = results["recsrv"]
    for metric in ("hr", "mrr"):
        best = max(float(results[line][metric]) for line in ("sr", "vsknn"))  # type: ignore[arg-type]
        assert float(ours[metric]) >= SHARE * best, (metric, ours[metric], best)  # type: ignore[arg-type]
