"""From finished runs to the paper's tables and plots: ``python -m analysis <sweep dir>``."""
