"""The VGG16 feature stack in torchvision's layout, shared by the perceptual losses and the band
colour model's frozen encoder (one layer list, so both load the same ``features.N`` weights)."""

from __future__ import annotations

from torch import nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "RELU_INDEX", "vgg16_layers"]

#: torchvision ``vgg16().features`` indices of the ReLU outputs LPIPS, perceptual losses and encoders tap.
RELU_INDEX = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


def vgg16_layers(last: str) -> list[nn.Module]:
    """The layers of ``vgg16().features`` up to and including the ReLU named ``last`` (e.g. "relu4_3")."""
    layers: list[nn.Module] = []
    ch = 3
    for v in _CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(ch, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            ch = int(v)
    return layers[: RELU_INDEX[last] + 1]
