"""Co-Settle for Hugging Face: a light projection on a frozen image ViT, trained for video."""

__version__ = "0.1.0"
