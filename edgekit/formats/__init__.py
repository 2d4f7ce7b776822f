"""What an artifact stores beyond Hugging Face's own files, and the torch modules that reproduce it.

- :mod:`edgekit.formats.int8`: edgekit's int8 scheme (u8 activations, s8/s7 per-channel weights): constants
  and the quantisation parameters, torch-free to import.
- :mod:`edgekit.formats.fake_quant`: the scheme simulated in torch (``FakeQuantLinear``), inserted into and
  removed from a model; what ``torch/quant.json`` holds and how the torch runtime rebuilds it.
- :mod:`edgekit.formats.native`: the ``native/`` folder the native engine reads (writer and validating reader;
  reading needs numpy and safetensors only).
"""
