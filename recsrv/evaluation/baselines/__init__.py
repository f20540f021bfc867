"""Reference next-item algorithms, to measure recsrv against in the same run.

One module per algorithm, all with the `Baseline` shape of `base`; none imports
anything from recsrv outside this package, so the comparison is with independent code.
`sessions` keeps each session's items in ts order for all of them.
"""

from recsrv.evaluation.baselines.base import Baseline, Step
from recsrv.evaluation.baselines.itemknn import ItemKnn
from recsrv.evaluation.baselines.pop import Pop
from recsrv.evaluation.baselines.sknn import SessionKnn
from recsrv.evaluation.baselines.sr import SequentialRules


def make_baselines() -> list[Baseline]:
    """POP, item-kNN, SR and SKNN; POP also tops up the others' short lists."""
    pop = Pop()
    return [pop, ItemKnn(pop), SequentialRules(pop), SessionKnn(pop)]


__all__ = ["Baseline", "ItemKnn", "Pop", "SequentialRules", "SessionKnn", "Step", "make_baselines"]
