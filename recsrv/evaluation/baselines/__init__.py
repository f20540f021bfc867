"""Reference next-item algorithms, to measure recsrv against in the same run.

One module per algorithm, all with the `Baseline` shape of `base`; none imports
anything from recsrv's own scoring, so the comparison is with independent code.
"""

from recsrv.evaluation.baselines.base import Baseline, Step
from recsrv.evaluation.baselines.legacy import ItemKnn, Pop, SequentialRules, SessionKnn


def make_baselines() -> list[Baseline]:
    """POP, item-kNN, SR and SKNN; POP also tops up the others' short lists."""
    pop = Pop()
    return [pop, ItemKnn(pop), SequentialRules(pop), SessionKnn(pop)]


__all__ = ["Baseline", "ItemKnn", "Pop", "SequentialRules", "SessionKnn", "Step", "make_baselines"]
