"""Training a Co-Settle adapter: `train(args, train_dataset=None)` and its `CoSettleTrainingArguments`."""

from .arguments import CoSettleTrainingArguments, DataArguments, ModelArguments, RunArguments, parse_args
from .trainer import TrainOutput, train

__all__ = ["CoSettleTrainingArguments", "DataArguments", "ModelArguments", "RunArguments", "TrainOutput", "parse_args", "train"]
