"""Image models (CNNs) in plain torch, and how to load them.

timm and torchvision are not used: the PyPI torchvision wheel for torch 2.13 is a CUDA build whose
extension fails against the CPU torch edgekit runs on, and timm imports torchvision. EfficientNet-Lite
is small enough to define here (:mod:`edgekit.vision.efficientnet_lite`).

>>> from edgekit.vision.efficientnet_lite import efficientnet_lite0
>>> model = efficientnet_lite0(pretrained=True).eval()      # doctest: +SKIP
"""
