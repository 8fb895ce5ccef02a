"""dmtl: a reproducible study of Distillation based Multi-task Learning (arXiv 2102.07142)."""
