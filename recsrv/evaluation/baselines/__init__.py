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
from recsrv.evaluation.baselines.stan import Stan
from recsrv.evaluation.baselines.topfreq import TopFreq
from recsrv.evaluation.baselines.vsknn import VSessionKnn
from recsrv.evaluation.baselines.vstan import Vstan


def make_baselines() -> list[Baseline]:
    """POP, item-kNN, SR, SKNN, V-SKNN, STAN, VSTAN and GP-TopFreq, in the order of the
    report; POP also tops up the others' short lists."""
    pop = Pop()
    return [
        pop,
        ItemKnn(pop),
        SequentialRules(pop),
        SessionKnn(pop),
        VSessionKnn(pop),
        Stan(pop),
        Vstan(pop),
        TopFreq(pop),
    ]


__all__ = [
    "Baseline",
    "ItemKnn",
    "Pop",
    "SequentialRules",
    "SessionKnn",
    "Stan",
    "Step",
    "TopFreq",
    "VSessionKnn",
    "Vstan",
    "make_baselines",
]
