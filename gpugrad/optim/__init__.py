"""``gg.optim``: optimizers (SGD, Adam, AdamW, RMSprop, Lion) and learning-rate schedulers, PyTorch's formulas."""
from . import lr_scheduler
from .adam import Adam, AdamW
from .lion import Lion
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Lion", "lr_scheduler"]
