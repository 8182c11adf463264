"""Training: strategies (a batch -> a loss) and the loop that adds TGO."""

from .strategies import (
    BPTT,
    TET,
    StepOutput,
    Strategy,
    create_strategy,
    list_strategies,
    register_strategy,
    strategy_class,
    tet_loss,
)
from .state import TrainState
from .trainer import EpochStats, Trainer, make_sgd
from .adversarial import AdversarialTraining, RegularizedAdversarialTraining, crafting_mode  # registers at, rat
from .baselines import SparsityRegularization, SparsityRegularizedAT, StochasticGating  # registers sr, sr_at, stog

# short names
AT, RAT, SR, StoG = AdversarialTraining, RegularizedAdversarialTraining, SparsityRegularization, StochasticGating

__all__ = [
    "Strategy",
    "StepOutput",
    "BPTT",
    "TET",
    "tet_loss",
    "create_strategy",
    "list_strategies",
    "register_strategy",
    "strategy_class",
    "Trainer",
    "TrainState",
    "EpochStats",
    "make_sgd",
    "AdversarialTraining",
    "RegularizedAdversarialTraining",
    "crafting_mode",
    "SparsityRegularization",
    "SparsityRegularizedAT",
    "StochasticGating",
    "AT",
    "RAT",
    "SR",
    "StoG",
]
