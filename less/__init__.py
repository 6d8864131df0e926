"""LESS: selecting influential data for targeted instruction tuning (Xia et al., ICML 2024)."""

__version__ = "0.1.0"
