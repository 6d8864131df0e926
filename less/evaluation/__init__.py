"""Evaluation with lm-eval: the paper's MMLU / TyDiQA / BBH protocol as local tasks, or any task."""
