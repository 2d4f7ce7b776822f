"""edgekit's native format: the folder ``native/`` in a compressed artifact, read by the native engine.

``native/config.json``: ``{"format": "edgekit-native", "version": 1, "arch": "bert"|"distilbert"|"roberta",
"task", "hidden", "heads", "layers", "intermediate", "vocab_size", "max_position", "type_vocab_size",
"layer_norm_eps", "activation", "position_offset", "pooling", "normalize", "head", "head_activation", "num_labels",
"labels", "pattern": "4x1"|"dense", "dense_linears": [...], "precision": "int8"|"fp32", "fp32_layers": [...],
"weight_bits": 8|7|null}``.

``dense_linears`` (4x1 models; absent: none): the encoder Linears that run on the dense kernels, those with under
:data:`DENSE_BELOW` of their 4x1 blocks pruned (a searched allocation leaves some Linears unpruned: the 4x1
kernels do not beat the dense ones there). q, k and v run as one fused Linear, dense only when all three are listed.

The architecture fields (every one but ``pooling`` may be absent: a folder written before it existed is read as
then, a post-LayerNorm BERT):

- ``activation``: the feed-forward activation, ``gelu`` (erf), ``gelu_tanh`` (Hugging Face ``gelu_new`` /
  ``gelu_pytorch_tanh``) or ``relu``; absent: ``gelu``.
- ``type_vocab_size``: 0 means no token type embeddings (DistilBERT; no ``embeddings.token_type`` tensor).
  The engine adds each token's row of it (``token_type_ids``; none given: row 0, one segment).
- ``position_offset``: the first position id (absent: 0). Above 0 (RoBERTa: padding index + 1) position ids
  also count attended tokens only, as RoBERTa's count non-padding tokens; the longest input is then
  ``max_position - position_offset`` tokens.
- ``pooling``: ``mean`` (over attended tokens), ``cls`` (the first token), ``max`` (per channel over attended
  tokens) or ``none`` (one output row per token, ``[batch, seq, width]``, zeros at padded positions). Folders
  written before the head fields existed hold ``mean`` (embeddings) or ``cls-pooler`` (read as ``cls``, head
  ``sequence``, head_activation ``tanh``).
- ``normalize``: L2-normalised output rows (embeddings); absent: true for ``mean`` pooling without a head.
- ``head``: ``none`` (absent: the pooled vector is the output), ``sequence`` (the classifier on the pooled vector:
  text classification) or ``token`` (the classifier on every token's state, with pooling ``none``: token
  classification). ``num_labels`` is the classifier's width.
- ``head_activation``: with a sequence head, ``tanh`` (BERT's pooler, RoBERTa's classification head) or ``relu``
  (DistilBERT's pre_classifier): a dense layer (``pooler.*``) and that activation run before the classifier;
  ``none`` (absent): the classifier reads the pooled vector.

Vision Transformers (ViT, DeiT; task ``image-classification``) add two fields (absent: a text model, as before):

- ``norm``: ``pre`` (LayerNorm before attention and before the FFN, the residual added after each, and a final
  LayerNorm after the last layer) or ``post`` (absent: ``post``, BERT's LayerNorm after each residual add).
- ``image``: ``{"image_size": [h, w], "patch_size": [ph, pw], "num_channels": c, "prefix_tokens": n}``. The input
  is pixel values [batch, c, h, w] (preprocessed as the artifact's ``extra.preprocess`` says); the runtime cuts
  them into (h / ph) * (w / pw) patches, row by row, each flattened in (channel, row, column) order, i.e. the order
  of the patch Conv2d's weight. ``prefix_tokens`` learned tokens (the class token; DeiT: and the distillation
  token) come before the patches; the classifier reads the first token's state after the final LayerNorm
  (``pooling`` ``cls``, ``head`` ``sequence``). ``vocab_size`` and ``type_vocab_size`` are 0, ``max_position`` is
  ``prefix_tokens`` + patches.

Their tensors replace the text embeddings: ``embeddings.patch.{weight,bias}`` (fp32, [hidden, c * ph * pw] and
[hidden]: the Conv2d as a GEMM over flattened patches), ``embeddings.prefix`` (fp32 [prefix_tokens, hidden]),
``embeddings.position`` (fp32 [max_position, hidden]) and ``final_ln.{weight,bias}``; ``attn_ln`` is then the
LayerNorm before attention and ``ffn_ln`` the one before the FFN. The layers' Linears are stored as for text.

``weight_bits`` (null for fp32 models; absent in folders written before it existed, read as 8): every int8
weight lies in [-(2^(bits-1) - 1), 2^(bits-1) - 1], i.e. [-63, 63] for 7-bit weights (checked on read).

``native/weights.safetensors`` (no pickles): fp32 ``embeddings.{word,position}``, ``embeddings.token_type``
(when ``type_vocab_size`` > 0), ``embeddings.ln.{weight,bias}``; per layer i and Linear L in q, k, v, o, ffn_in, ffn_out:
``layers.{i}.{L}.weight`` (int8 [N, K], pruned entries exactly 0; fp32 when the layer is kept fp32),
``.w_scale`` fp32 [N], ``.bias`` fp32 [N], ``.x_scale`` fp32 [1], ``.x_zp`` int32 [1] (int8 layers only);
``layers.{i}.attn_ln.{weight,bias}``, ``layers.{i}.ffn_ln.{weight,bias}``; classifiers also
``classifier.{weight,bias}`` and, with a head activation, ``pooler.{weight,bias}`` (fp32). The semantics are those of
:mod:`edgekit.formats.int8`. A layer's FFN neurons may be stored in another order than
in the torch model (the same function): neuron-pruned rows are gathered into whole 4x1 blocks.

Reading needs numpy and safetensors only; writing takes a torch model and reads it through
:func:`edgekit.arch.encoder`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgekit.errors import ArtifactError

from .int8 import WEIGHT_BITS, weight_qmax, weight_qparams

FORMAT, VERSION = "edgekit-native", 1
ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
POOLINGS = ("mean", "cls", "max", "none")
HEADS = ("none", "sequence", "token")
HEAD_ACTIVATIONS = ("none", "tanh", "relu")
NORMS = ("post", "pre")


def _np(t) -> np.ndarray:
    return t.detach().cpu().float().numpy().copy()


#: a Linear of a 4x1 model with fewer of its 4x1 blocks all-zero than this runs on the dense kernels
DENSE_BELOW = 0.25


def _block_nonzeros(w):
    """Non-zero count per 4x1 block of torch weight ``w`` ([ceil(N/4), K]; rows padded with zeros to whole blocks)."""
    import torch

    n, k = w.shape
    return torch.nn.functional.pad((w != 0).float(), (0, 0, 0, (-n) % 4)).reshape(-1, 4, k).sum(1)


def block_sparsity(w) -> float:
    """The fraction of the 4x1 blocks of torch weight ``w`` (rows padded to a multiple of 4) that are all zero."""
    return float((_block_nonzeros(w) == 0).float().mean())


def is_4x1(w) -> bool:
    """Every 4x1 block of torch weight ``w`` is all-zero or all-kept (the last partial block counts its rows
    only): the layout the sparse kernels pack."""
    import torch

    n = w.shape[0]
    rows = torch.ones(((n + 3) // 4) * 4)
    rows[n:] = 0
    full = rows.reshape(-1, 4).sum(1, keepdim=True)
    cnt = _block_nonzeros(w)
    return bool(((cnt == 0) | (cnt == full)).all())


def write_native(wrapper, task: str, qstate: dict | None, dest: Path, labels: list[str] | None = None) -> Path:
    """Write ``dest/config.json`` and ``dest/weights.safetensors`` from a (pruned) task wrapper.
    ``qstate`` is :func:`edgekit.formats.fake_quant.quant_state` (None = everything fp32)."""
    from safetensors.numpy import save_file

    from edgekit.arch import encoder, encoder_linears

    enc = encoder(wrapper)
    dest.mkdir(parents=True, exist_ok=True)
    if enc.image is not None:
        t = _image_embeddings(enc)
    else:
        t = {"embeddings.word": _np(enc.word.weight), "embeddings.position": _np(enc.position.weight),
             "embeddings.ln.weight": _np(enc.embed_ln.weight), "embeddings.ln.bias": _np(enc.embed_ln.bias)}
        if enc.token_type is not None and enc.type_vocab_size > 0:
            t["embeddings.token_type"] = _np(enc.token_type.weight)
    linears = encoder_linears(wrapper)
    qlayers = (qstate or {}).get("layers", {})
    bits = int((qstate or {}).get("weight_bits", 8))
    fp32_layers = sorted(n for n in linears if n not in qlayers)
    weights = {n: (lin.weight.detach(), lin.bias.detach()) for n, lin in linears.items()}
    for i in range(len(enc.layers)):
        _gather_pruned_neurons(weights, f"layers.{i}.")
    for name, lin in linears.items():
        w, bias = weights[name]
        if name in qlayers:
            q, ws = weight_qparams(w, bits)
            t[f"{name}.weight"] = q.numpy()
            t[f"{name}.w_scale"] = ws.numpy()
            t[f"{name}.x_scale"] = np.array([qlayers[name]["x_scale"]], np.float32)
            t[f"{name}.x_zp"] = np.array([qlayers[name]["x_zp"]], np.int32)
        else:
            t[f"{name}.weight"] = _np(w)
        t[f"{name}.bias"] = _np(bias)
    for i, layer in enumerate(enc.layers):
        t[f"layers.{i}.attn_ln.weight"] = _np(layer.attn_ln.weight)
        t[f"layers.{i}.attn_ln.bias"] = _np(layer.attn_ln.bias)
        t[f"layers.{i}.ffn_ln.weight"] = _np(layer.ffn_ln.weight)
        t[f"layers.{i}.ffn_ln.bias"] = _np(layer.ffn_ln.bias)
    num_labels, head = None, "none"
    if enc.classifier is not None:
        head = "token" if enc.token_level else "sequence"
        if enc.pooler is not None:
            t["pooler.weight"], t["pooler.bias"] = _np(enc.pooler.weight), _np(enc.pooler.bias)
        t["classifier.weight"], t["classifier.bias"] = _np(enc.classifier.weight), _np(enc.classifier.bias)
        num_labels = int(enc.classifier.out_features)
    sparse = all(is_4x1(w) for w, _ in weights.values()) and any(
        float((w == 0).float().mean()) > 0.0 for w, _ in weights.values())
    config = {
        "format": FORMAT, "version": VERSION, "arch": enc.arch, "task": task, "hidden": enc.hidden,
        "heads": enc.heads, "layers": len(enc.layers), "intermediate": enc.intermediate,
        "vocab_size": enc.vocab_size, "max_position": enc.max_position,
        "type_vocab_size": enc.type_vocab_size if enc.token_type is not None else 0,
        "layer_norm_eps": enc.layer_norm_eps, "activation": enc.activation, "position_offset": enc.position_offset,
        "pooling": enc.pooling, "normalize": bool(enc.normalize) and head == "none", "head": head,
        "head_activation": (enc.head_activation or "none") if head == "sequence" and enc.pooler is not None else "none",
        "num_labels": num_labels,
        "labels": labels, "pattern": "4x1" if sparse else "dense",
        "dense_linears": sorted(n for n, (w, _) in weights.items() if block_sparsity(w) < DENSE_BELOW) if sparse else [],
        "precision": "int8" if qlayers else "fp32",
        "fp32_layers": fp32_layers if qlayers else [], "weight_bits": bits if qlayers else None,
    }
    if enc.image is not None:
        im = enc.image
        config.update(norm="pre", image={"image_size": list(im["image_size"]), "patch_size": list(im["patch_size"]),
                                         "num_channels": int(im["num_channels"]),
                                         "prefix_tokens": int(im["prefix_tokens"])})
    save_file({k: np.ascontiguousarray(v) for k, v in t.items()}, str(dest / "weights.safetensors"))
    (dest / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return dest


def _image_embeddings(enc) -> dict[str, np.ndarray]:
    """A ViT's embedding tensors: the patch Conv2d (kernel = stride = patch) as a [hidden, C * ph * pw] GEMM, the
    prefix tokens (class token; DeiT: then the distillation token), the position table and the final LayerNorm."""
    conv, emb = enc.word, enc.embeddings
    if tuple(conv.kernel_size) != tuple(conv.stride) or any(conv.padding) or conv.groups != 1:
        raise ArtifactError("the native format takes a patch embedding whose kernel equals its stride "
                            f"(got kernel {tuple(conv.kernel_size)}, stride {tuple(conv.stride)})")
    prefix = [emb.cls_token] + ([emb.distillation_token] if getattr(emb, "distillation_token", None) is not None
                                else [])
    if len(prefix) != enc.image["prefix_tokens"]:
        raise ArtifactError(f"{enc.image['prefix_tokens']} prefix tokens described, {len(prefix)} found")
    hidden = enc.hidden
    return {
        "embeddings.patch.weight": _np(conv.weight).reshape(hidden, -1),
        "embeddings.patch.bias": _np(conv.bias) if conv.bias is not None else np.zeros(hidden, np.float32),
        "embeddings.prefix": np.concatenate([_np(p).reshape(1, hidden) for p in prefix]),
        "embeddings.position": _np(enc.position).reshape(-1, hidden),
        "final_ln.weight": _np(enc.final_ln.weight), "final_ln.bias": _np(enc.final_ln.bias),
    }


def _gather_pruned_neurons(weights: dict, prefix: str) -> None:
    """Reorder one layer's FFN neurons (ffn_in rows + bias, ffn_out columns: the same function) so
    that all-zero ffn_in rows come last, when that turns ffn_in into whole 4x1 blocks. Neuron pruning
    removes single rows; gathered (in multiples of 4, as the pruner prunes them) they become empty blocks
    the sparse kernels skip instead of a dense layer."""
    import torch

    if prefix + "ffn_in" not in weights or prefix + "ffn_out" not in weights:
        return
    w_in, b_in = weights[prefix + "ffn_in"]
    if is_4x1(w_in):
        return
    dead = (w_in == 0).all(1)
    order = torch.cat([(~dead).nonzero().flatten(), dead.nonzero().flatten()])
    if not dead.any() or not is_4x1(w_in[order]):
        return
    w_out, b_out = weights[prefix + "ffn_out"]
    weights[prefix + "ffn_in"] = (w_in[order], b_in[order])
    weights[prefix + "ffn_out"] = (w_out[:, order], b_out)


def _architecture(cfg: dict, path: Path) -> None:
    """Fill in the architecture fields a folder written before them lacks (as they were then) and check them."""
    if cfg.get("pooling") == "cls-pooler":  # a BERT classifier from before pooling and head were separate
        cfg.update(pooling="cls", head="sequence", head_activation="tanh", normalize=False)
    cfg.setdefault("activation", "gelu")
    cfg.setdefault("position_offset", 0)
    cfg.setdefault("head", "none")
    cfg.setdefault("head_activation", "none")
    cfg.setdefault("normalize", cfg.get("pooling") == "mean" and cfg["head"] == "none")
    for key, allowed in (("activation", ACTIVATIONS), ("pooling", POOLINGS), ("head", HEADS),
                         ("head_activation", HEAD_ACTIVATIONS)):
        if cfg.get(key) not in allowed:
            raise ArtifactError(f"native model {path}: {key} {cfg.get(key)!r} is not supported; allowed: "
                                f"{', '.join(allowed)}")
    if (cfg["head"] == "token") != (cfg["pooling"] == "none"):
        raise ArtifactError(f"native model {path}: head 'token' goes with pooling 'none' (and only it)")
    cfg.setdefault("norm", "post")
    if cfg["norm"] not in NORMS:
        raise ArtifactError(f"native model {path}: norm {cfg['norm']!r} is not supported; allowed: {', '.join(NORMS)}")
    image = cfg.setdefault("image", None)
    if (image is not None) != (cfg["norm"] == "pre"):
        raise ArtifactError(f"native model {path}: norm 'pre' goes with an image entry (a ViT), and only it")
    if image is not None:
        _check_image(cfg, image, path)
    off = cfg["position_offset"]
    if isinstance(off, bool) or not isinstance(off, int) or not 0 <= off < int(cfg.get("max_position", 0)):
        raise ArtifactError(f"native model {path}: position_offset {off!r} must be an integer in 0..max_position - 1")


def _check_image(cfg: dict, image, path: Path) -> None:
    """A ViT's ``image`` entry: whole patches, and positions for the prefix tokens and every patch."""
    def pair(key):
        v = image.get(key) if isinstance(image, dict) else None
        ok = isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and x >= 1 for x in v)
        return v if ok else None

    size, patch = pair("image_size"), pair("patch_size")
    ch, prefix = (image.get("num_channels"), image.get("prefix_tokens")) if isinstance(image, dict) else (None, None)
    if (size is None or patch is None or size[0] % patch[0] or size[1] % patch[1] or not isinstance(ch, int)
            or ch < 1 or not isinstance(prefix, int) or prefix < 1):
        raise ArtifactError(f"native model {path}: image must hold image_size and patch_size ([height, width], "
                            f"whole patches), num_channels >= 1 and prefix_tokens >= 1; got {image!r}")
    tokens = prefix + (size[0] // patch[0]) * (size[1] // patch[1])
    if cfg.get("max_position") != tokens or cfg.get("pooling") != "cls" or cfg.get("head") != "sequence":
        raise ArtifactError(f"native model {path}: an image model has max_position = prefix_tokens + patches "
                            f"({tokens}), cls pooling and a sequence head")


def image_patches(pixels: np.ndarray, image: dict) -> np.ndarray:
    """Pixel values [B, C, H, W] as the flattened patches a ViT's native model takes: [B, patches, C * ph * pw],
    patches row by row, each in (channel, row, column) order (that of the patch Conv2d's weight).

    >>> image_patches(np.zeros((2, 1, 28, 28), np.float32), {"patch_size": [7, 7]}).shape
    (2, 16, 49)
    """
    b, c, h, w = pixels.shape
    ph, pw = image["patch_size"]
    x = pixels.reshape(b, c, h // ph, ph, w // pw, pw).transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(x.reshape(b, (h // ph) * (w // pw), c * ph * pw), dtype=np.float32)


def read_native(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(config, tensors), validated: format, version, the tensors each layer needs and their dtypes/shapes."""
    from safetensors.numpy import load_file

    path = Path(path)
    try:
        cfg = json.loads((path / "config.json").read_text())
        tensors = load_file(str(path / "weights.safetensors"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read native model in {path}: {exc}") from None
    if cfg.get("format") != FORMAT or cfg.get("version") != VERSION:
        raise ArtifactError(f"{path} holds {cfg.get('format')} version {cfg.get('version')}; this edgekit reads "
                            f"{FORMAT} version {VERSION}")
    bits = cfg.setdefault("weight_bits", 8 if cfg.get("precision") == "int8" else None)
    if bits is not None and (isinstance(bits, bool) or bits not in WEIGHT_BITS):
        raise ArtifactError(f"native model {path}: weight_bits {bits!r} is not supported; allowed: "
                            f"{', '.join(map(str, WEIGHT_BITS))}")
    _architecture(cfg, path)
    qmax = weight_qmax(bits) if bits is not None else 127
    h, inter = cfg["hidden"], cfg["intermediate"]
    shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "o": (h, h), "ffn_in": (inter, h), "ffn_out": (h, inter)}
    for i in range(cfg["layers"]):
        for lin, shape in shapes.items():
            name = f"layers.{i}.{lin}"
            w = tensors.get(f"{name}.weight")
            if w is None or tuple(w.shape) != shape:
                raise ArtifactError(f"native model {path}: {name}.weight missing or not of shape {shape}")
            if w.dtype == np.int8:
                for part, dt in (("w_scale", np.float32), ("x_scale", np.float32), ("x_zp", np.int32)):
                    if tensors.get(f"{name}.{part}") is None or tensors[f"{name}.{part}"].dtype != dt:
                        raise ArtifactError(f"native model {path}: {name}.{part} missing or not {dt.__name__}")
                if qmax < 127 and int(np.abs(w.astype(np.int16)).max(initial=0)) > qmax:
                    raise ArtifactError(f"native model {path}: {name}.weight has values outside [-{qmax}, {qmax}] "
                                        f"although weight_bits is {bits}")
            elif w.dtype != np.float32:
                raise ArtifactError(f"native model {path}: {name}.weight must be int8 or float32, not {w.dtype}")
    if cfg["image"] is not None:
        im = cfg["image"]
        dim = im["num_channels"] * im["patch_size"][0] * im["patch_size"][1]
        for name, shape in (("embeddings.patch.weight", (h, dim)), ("embeddings.patch.bias", (h,)),
                            ("embeddings.prefix", (im["prefix_tokens"], h)),
                            ("embeddings.position", (cfg["max_position"], h)), ("final_ln.weight", (h,)),
                            ("final_ln.bias", (h,))):
            a = tensors.get(name)
            if a is None or a.dtype != np.float32 or tuple(a.shape) != shape:
                raise ArtifactError(f"native model {path}: {name} missing or not float32 of shape {shape}")
    return cfg, tensors
