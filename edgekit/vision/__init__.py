"""Image models and how to load them: CNNs in plain torch (:mod:`.efficientnet_lite`, :mod:`.io`), ViT / DeiT
Hugging Face folders (:mod:`.vit_models`) and the ``vit-fmnist`` teacher (:mod:`.vit_teacher`). Their
preprocessing is one spec, :class:`edgekit.data.images.ImagePreprocessConfig`; their compression drivers live
with the compressor (:mod:`edgekit.api_images` dispatches, :mod:`edgekit.compress.vision` for ViTs).

timm and torchvision are not used: the PyPI torchvision wheel for torch 2.13 is a CUDA build whose
extension fails against the CPU torch edgekit runs on, and timm imports torchvision. EfficientNet-Lite
is small enough to define here (:mod:`edgekit.vision.efficientnet_lite`).

>>> from edgekit.vision.efficientnet_lite import efficientnet_lite0
>>> model = efficientnet_lite0(pretrained=True).eval()      # doctest: +SKIP
"""
