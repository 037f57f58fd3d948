"""tunescout: fine-tune small LLMs with the SFT recipe and find good hyperparameters cheaply."""

__version__ = "0.1.0"
__all__ = ["__version__"]
