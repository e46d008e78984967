"""Backbones. 2D ones follow torchvision's state-dict layout; all take an attention factory."""

from aarm.backbones.c3d import C3D
from aarm.backbones.resnet import RESNET_LAYOUTS, BasicBlock, Bottleneck, ResNet
from aarm.backbones.resnet3d import BasicBlock3d, ResNet3D18
from aarm.backbones.vgg import VGG16

__all__ = ["C3D", "RESNET_LAYOUTS", "BasicBlock", "BasicBlock3d", "Bottleneck", "ResNet", "ResNet3D18", "VGG16"]
