"""``gg.utils``: PyTorch's ``torch.utils`` names (``gg.utils.data``: datasets and the data loader)."""
from . import data

__all__ = ["data"]
