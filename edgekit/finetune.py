"""Build the default trained model: minilm-l6 + a classification head fine-tuned on bbc-news train.

Seeded and deterministic on one machine (single-threaded data order, fixed init); about 5 minutes on
2 cores. Used by the zoo as ``minilm-l6-bbc`` and as the teacher of the default recipe.
"""
from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def finetune_classifier(src: Path, dest: Path, data: str = "bbc-news", epochs: int = 2, batch: int = 16,
                        lr: float = 1e-4, max_length: int = 128, seed: int = 0, progress: bool = True) -> float:
    """Fine-tune ``src`` (an encoder folder) with a new head; write an HF folder to ``dest``.

    Returns the validation accuracy (also written to ``dest/finetune.json``)."""
    import json

    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from edgekit.data import load_dataset, tokenize

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    seed_everything(seed)
    train, val = load_dataset(data, "train"), load_dataset(data, "validation")
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForSequenceClassification.from_pretrained(
        src, num_labels=len(train.label_names),
        id2label=dict(enumerate(train.label_names)), label2id={n: i for i, n in enumerate(train.label_names)},
    )
    feeds = tokenize(tok, train.texts, max_length=max_length)
    ids, mask = torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])
    labels = torch.tensor(train.labels)
    steps = epochs * math.ceil(len(train) / batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.1 * steps)) * max(0.0, 1 - s / steps))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with tqdm(total=steps, desc="fine-tune minilm-l6-bbc", disable=not progress) as bar:
        for _ in range(epochs):
            order = torch.randperm(len(train), generator=gen)
            for i in range(0, len(order), batch):
                idx = order[i : i + batch]
                loss = model(input_ids=ids[idx], attention_mask=mask[idx], labels=labels[idx]).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                opt.zero_grad()
                bar.set_postfix(loss=f"{loss.item():.3f}")
                bar.update()
    model.eval()
    vf = tokenize(tok, val.texts, max_length=max_length)
    with torch.inference_mode():
        logits = model(input_ids=torch.from_numpy(vf["input_ids"]), attention_mask=torch.from_numpy(vf["attention_mask"])).logits
    acc = float((logits.argmax(1).numpy() == np.asarray(val.labels)).mean())
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    (Path(dest) / "finetune.json").write_text(json.dumps({"source": "minilm-l6", "data": data, "epochs": epochs,
                                                          "batch": batch, "lr": lr, "seed": seed,
                                                          "validation_accuracy": acc}, indent=2))
    return acc
