"""Which keyword arguments transformers' loaders and pushers take, read from transformers itself.

A hand-kept list breaks each time transformers adds an argument (a pipeline passing `proxies` did),
so the lists here are derived from transformers' signatures when co_settle_hf is imported.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from transformers import PreTrainedModel
from transformers.utils.hub import cached_files


def keyword_parameters(function: Callable[..., Any], *exclude: str) -> frozenset[str]:
    """The public keyword parameters a function declares (no `*args`/`**kwargs`, none starting with `_`)."""
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(
        name for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind in named and not name.startswith("_") and name not in exclude
    )


#: What every Hub file read takes: cache_dir, force_download, proxies, token, revision, local_files_only, ...
DOWNLOAD_ARGUMENTS = keyword_parameters(cached_files, "path_or_repo_id", "filenames")
#: What transformers' `push_to_hub` takes besides the repository: commit_message, private, create_pr, tags, ...
PUSH_ARGUMENTS = keyword_parameters(PreTrainedModel.push_to_hub, "self", "repo_id")
#: Arguments of `from_pretrained` that describe the adapter's own files, never its base backbone's.
ADAPTER_FILE_ARGUMENTS = frozenset({
    "config", "revision", "subfolder", "output_loading_info", "state_dict", "variant", "gguf_file",
    "key_mapping", "ignore_mismatched_sizes", "adapter_kwargs", "adapter_name",
})


def download_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of `kwargs` that a Hub file read takes."""
    return {key: value for key, value in kwargs.items() if key in DOWNLOAD_ARGUMENTS}
