"""Models of the study: the MMoE+ESMM teacher and the two-tower student (plain ``torch.nn`` modules)."""

from dmtl.models.layers import MLP, FeatureEmbedding
from dmtl.models.teacher import BACKBONES, MultiTaskTeacher
from dmtl.models.two_tower import SCORES, ItemTower, TwoTower, UserTower

__all__ = [
    "BACKBONES",
    "SCORES",
    "MLP",
    "FeatureEmbedding",
    "ItemTower",
    "MultiTaskTeacher",
    "TwoTower",
    "UserTower",
]
