"""An artifact's tokenizer without transformers: ``tokenizer/tokenizer.json`` read by the ``tokenizers`` library.

A runtime-only install (``pip install edgekit``, no torch, no transformers) tokenises with this class. It
answers the part of Hugging Face's tokenizer call that edgekit uses (texts or text pairs or pre-split words,
``max_length``, ``truncation``, ``padding`` "longest" / "max_length", ``return_tensors="np"``, ``word_ids``),
with the same ids, since a Hugging Face "fast" tokenizer is this same ``tokenizers`` object underneath; a test
checks that on real text. With transformers installed, :func:`edgekit.runtimes.load_tokenizer` keeps using it.

>>> tok = ArtifactTokenizer.from_folder("out/bbc/tokenizer")                 # doctest: +SKIP
>>> tok(["a cat", "a dog"], max_length=16, truncation=True, padding="longest", return_tensors="np")["input_ids"]
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from edgekit.errors import InputError

#: tokenizer classes whose models take ``token_type_ids`` when the config does not list its model inputs
_TYPE_ID_CLASSES = ("BertTokenizer", "ElectraTokenizer", "AlbertTokenizer")


class Encoded(dict):
    """What a call returns: ``input_ids``, ``attention_mask`` (and ``token_type_ids``) plus ``word_ids(row)``."""

    def __init__(self, data: dict, encodings):
        super().__init__(data)
        self._encodings = encodings

    def word_ids(self, row: int = 0) -> list[int | None]:
        return list(self._encodings[row].word_ids)


class ArtifactTokenizer:
    """A ``tokenizers.Tokenizer`` behind the slice of Hugging Face's tokenizer call edgekit uses."""

    is_fast = True

    def __init__(self, backend, config: dict | None = None):
        config = config or {}
        self._tok = backend
        self._lock = threading.Lock()  # truncation and padding are set on the shared backend for each call
        self.model_max_length = int(config.get("model_max_length") or 512)
        if self.model_max_length > 1_000_000:  # Hugging Face's "no limit" placeholder
            self.model_max_length = 512
        pad = config.get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        pad_id = backend.token_to_id(pad) if isinstance(pad, str) else None
        if pad_id is None and backend.padding:
            pad_id = backend.padding.get("pad_id")
        self.pad_token = pad if isinstance(pad, str) else None
        self.pad_token_id = int(pad_id) if pad_id is not None else 0
        names = config.get("model_input_names")
        cls = str(config.get("tokenizer_class") or "").removesuffix("Fast")
        self._type_ids = "token_type_ids" in names if names else cls in _TYPE_ID_CLASSES
        backend.no_truncation()
        backend.no_padding()

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "ArtifactTokenizer":
        """Load ``folder/tokenizer.json`` (and the pad token and length limit of ``tokenizer_config.json``)."""
        from tokenizers import Tokenizer

        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise InputError(f"{folder} has no tokenizer.json; without transformers installed edgekit reads only "
                             "that file (pip install 'edgekit[compress]' for other tokenizer formats)")
        try:
            backend = Tokenizer.from_file(str(path))
        except Exception as exc:  # the library's own error says little about which file
            raise InputError(f"{path} is not a tokenizers file: {str(exc).splitlines()[0] if str(exc) else exc}") \
                from None
        cfg_path = folder / "tokenizer_config.json"
        try:
            config = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
        except ValueError:
            raise InputError(f"{cfg_path} is not valid JSON") from None
        return cls(backend, config if isinstance(config, dict) else {})

    def get_vocab(self) -> dict[str, int]:
        return self._tok.get_vocab(with_added_tokens=True)

    def __len__(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def __call__(self, text, text_pair=None, max_length: int | None = None, truncation: bool | str = False,
                 padding: bool | str = False, return_tensors: str | None = None, is_split_into_words: bool = False,
                 add_special_tokens: bool = True) -> Encoded:
        single = isinstance(text, str) or (is_split_into_words and text and isinstance(text[0], str))
        texts = [text] if single else list(text)
        if text_pair is not None:
            pairs = [text_pair] if single else list(text_pair)
            if len(pairs) != len(texts):
                raise InputError(f"{len(texts)} texts but {len(pairs)} pairs; each text needs its pair")
            inputs: Sequence = list(zip(texts, pairs))
        else:
            inputs = texts
        limit = max_length if max_length is not None else self.model_max_length
        with self._lock:
            if truncation:
                self._tok.enable_truncation(limit, strategy="longest_first")
            else:
                self._tok.no_truncation()
            if padding in ("max_length",):
                self._tok.enable_padding(pad_id=self.pad_token_id, pad_token=self.pad_token or "[PAD]", length=limit)
            elif padding in (True, "longest"):
                self._tok.enable_padding(pad_id=self.pad_token_id, pad_token=self.pad_token or "[PAD]")
            else:
                self._tok.no_padding()
            try:
                encs = self._tok.encode_batch(inputs, is_pretokenized=is_split_into_words,
                                              add_special_tokens=add_special_tokens)
            finally:
                self._tok.no_truncation()
                self._tok.no_padding()
        data = {"input_ids": [e.ids for e in encs], "attention_mask": [e.attention_mask for e in encs]}
        if self._type_ids:
            data["token_type_ids"] = [e.type_ids for e in encs]
        if return_tensors == "np":
            data = {k: np.asarray(v, dtype=np.int64) for k, v in data.items()}
        elif return_tensors is not None:
            raise InputError(f"return_tensors={return_tensors!r}: this tokenizer returns numpy ('np') or lists")
        elif single:
            data = {k: v[0] for k, v in data.items()}
        return Encoded(data, encs)
