"""Where the batch engine still finds the outcome reading until it reads result lines through its provider."""

from addm_integration.provider.base import Outcome
from addm_integration.provider.openai_api import from_batch_line

__all__ = ["Outcome", "from_batch_line"]
