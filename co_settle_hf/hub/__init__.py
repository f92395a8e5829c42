"""Hub-side helpers: the model card every saved adapter carries (`model_card`) and the split of
`from_pretrained` keyword arguments into file-download ones (`arguments`)."""

from .arguments import download_kwargs
from .model_card import add_results_to_card, eval_result, results_from_summary, update_card

__all__ = ["add_results_to_card", "download_kwargs", "eval_result", "results_from_summary", "update_card"]
