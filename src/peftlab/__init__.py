"""peftlab: apply parameter-efficient fine-tuning to a model and data, count what trains, and compare the cost.

The command line is a thin layer over this API::

    from peftlab import RunConfig, compare
    results = compare(RunConfig(data="path/to/sst2", methods=["full", "lora"], epochs=1))
"""

__version__ = "0.1.0"

from peftlab.config import RunConfig  # noqa: E402
from peftlab.errors import PeftlabError  # noqa: E402

__all__ = ["PeftlabError", "RunConfig", "__version__", "compare", "count_params", "evaluate_artifact", "predict", "train"]


def __getattr__(name):
    # The runner imports torch and transformers; load it on first use so `import peftlab` stays fast.
    if name in ("compare", "train", "count_params", "evaluate_artifact", "predict"):
        from peftlab import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'peftlab' has no attribute {name!r}")
