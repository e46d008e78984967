"""Backbones. 2D ones follow torchvision's state-dict layout; all take an attention factory."""

from aarm.backbones.c3d import C3D
from aarm.backbones.resnet import CONV2D, RESNET_LAYOUTS, BasicBlock, Bottleneck, Convs, ResNet
from aarm.backbones.resnet3d import CONV3D, ResNet3D18
from aarm.backbones.vgg import VGG16

__all__ = [
    "C3D", "CONV2D", "CONV3D", "RESNET_LAYOUTS", "BasicBlock", "Bottleneck", "Convs", "ResNet", "ResNet3D18", "VGG16",
]
