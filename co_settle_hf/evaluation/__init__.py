"""The paper's evaluation suite and two beyond it, one loop for all (`loop`), one command (`cli`).

Label propagation on DAVIS (J&F), JHMDB (PCK) and VIP (mIoU), TAP-Vid point tracking (AJ), UCF101 /
HMDB51 retrieval (R@k) and the separability / consistency trade-off analysis. Each `evaluate_*`
takes an encoder (`load_for_evaluation`, or a `BackboneEncoder` / `CoSettleModel`), the data root
and an output folder, and returns its summary; a `FeatureCache` keeps a backbone's features for the
next model on it. `evaluate(task, models, ...)` is `co-settle eval TASK` from Python (several
models compared, pictures and tables written).
"""

from .cache import FeatureCache
from .cli import evaluate
from .davis import evaluate_davis
from .encoders import LoadedModel, load_for_evaluation
from .jhmdb import PCK_THRESHOLDS, evaluate_jhmdb
from .propagation import PropagationSettings
from .retrieval import evaluate_retrieval
from .tapvid import evaluate_tapvid
from .tracking import TrackingSettings
from .tradeoff import TRADEOFF, TradeoffSettings, analyze_tradeoff
from .vip import evaluate_vip

__all__ = [
    "PCK_THRESHOLDS",
    "TRADEOFF",
    "FeatureCache",
    "LoadedModel",
    "PropagationSettings",
    "TrackingSettings",
    "TradeoffSettings",
    "analyze_tradeoff",
    "evaluate",
    "evaluate_davis",
    "evaluate_jhmdb",
    "evaluate_retrieval",
    "evaluate_tapvid",
    "evaluate_vip",
    "load_for_evaluation",
]
