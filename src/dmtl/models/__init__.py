"""Models of the study: the MMoE+ESMM teacher, the two-tower student and the position factor (PAL) they
train beside (plain ``torch.nn`` modules)."""

from dmtl.models.layers import MLP, FeatureEmbedding
from dmtl.models.position import PositionBias
from dmtl.models.teacher import BACKBONES, MultiTaskTeacher
from dmtl.models.two_tower import SCORES, ItemTower, TwoTower, UserTower

__all__ = [
    "BACKBONES",
    "SCORES",
    "MLP",
    "FeatureEmbedding",
    "ItemTower",
    "MultiTaskTeacher",
    "PositionBias",
    "TwoTower",
    "UserTower",
]
