"""The fine-tuning recipes of scripts/finetune-results.sh run with the transformers Trainer (and
sentence-transformers' trainer for similarity), so RESULTS.md can put ptm's numbers beside
PyTorch's: same model (all-MiniLM-L6-v2), data, maximum length, batch size, epochs, learning
rate, AdamW with weight decay 0.01 (not on biases and LayerNorm weights), linear schedule with
10% warm-up, gradient clipping at 1.0, seed 42, dropout on. What differs: the order in which the
examples are drawn (each library's own generator) and, for similarity, which half of the
training pairs is used.

Run (CPU, about 20 minutes on 2 cores):
  bash tools/fetch-minilm.sh
  python3 tools/data/bible_pairs.py ../shared/data/bible_parallel/verses.jsonl /tmp/ptm-finetune/bible-data
  $(tools/reference/setup-venv.sh) tools/reference/finetune_reference.py [--seed N] [rt sms wnut bible]
Writes results/finetune/reference-<name>.json (seed 42) or reference-<name>-seed<N>.json.
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "true"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from seqeval.metrics import classification_report as seqeval_report  # noqa: E402
from sklearn.metrics import accuracy_score, precision_recall_fscore_support  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
MINILM = Path.home() / ".cache" / "ptm" / "models" / "all-MiniLM-L6-v2"
OUT = ROOT / "results" / "finetune"
TMP = Path(os.environ.get("PTM_RESULTS_TMP", "/tmp/ptm-finetune"))
SEED = 42


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def args(name, epochs, batch, lr):
    return TrainingArguments(
        output_dir=str(TMP / f"reference-{name}"), num_train_epochs=epochs, per_device_train_batch_size=batch,
        per_device_eval_batch_size=64, learning_rate=lr, weight_decay=0.01, warmup_steps=0.1,
        lr_scheduler_type="linear", max_grad_norm=1.0, seed=SEED, eval_strategy="no", save_strategy="no",
        report_to=[], use_cpu=True, logging_steps=50, dataloader_num_workers=0,
    )


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def seq_cls(name, folder, epochs, batch, lr, max_length):
    labels = [line.strip() for line in open(DATA / folder / "labels.txt") if line.strip()]
    tok = AutoTokenizer.from_pretrained(MINILM)

    def encode(rows):
        enc = tok([r["text"] for r in rows], truncation=True, max_length=max_length)
        return [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                 "token_type_ids": enc["token_type_ids"][i], "labels": rows[i]["label"]} for i in range(len(rows))]

    train, test = read_jsonl(DATA / folder / "train.jsonl"), read_jsonl(DATA / folder / "test.jsonl")
    model = AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=len(labels))
    trainer = Trainer(model=model, args=args(name, epochs, batch, lr), train_dataset=ListDataset(encode(train)),
                      data_collator=DataCollatorWithPadding(tok))
    trainer.train()
    pred = trainer.predict(ListDataset(encode(test))).predictions.argmax(-1)
    gold = [r["label"] for r in test]
    p, r, f, _ = precision_recall_fscore_support(gold, pred, labels=list(range(len(labels))), zero_division=0)
    return {"accuracy": accuracy_score(gold, pred), "macro_f1": float(np.mean(f)),
            "per_class": {labels[i]: {"precision": p[i], "recall": r[i], "f1": f[i]} for i in range(len(labels))}}


def token_cls(name, epochs, batch, lr, max_length):
    labels = [line.strip() for line in open(DATA / "wnut16_ner" / "labels.txt") if line.strip()]
    tok = AutoTokenizer.from_pretrained(MINILM)

    def encode(rows):
        out = []
        for r in rows:
            enc = tok(r["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
            previous, ids = None, []
            for w in enc.word_ids():
                ids.append(-100 if w is None or w == previous else labels.index(r["tags"][w]))
                previous = w
            out.append({**enc, "labels": ids})
        return out

    train, test = read_jsonl(DATA / "wnut16_ner" / "train.jsonl"), read_jsonl(DATA / "wnut16_ner" / "test.jsonl")
    model = AutoModelForTokenClassification.from_pretrained(MINILM, num_labels=len(labels))
    trainer = Trainer(model=model, args=args(name, epochs, batch, lr), train_dataset=ListDataset(encode(train)),
                      data_collator=DataCollatorForTokenClassification(tok))
    trainer.train()
    test_enc = encode(test)
    logits = trainer.predict(ListDataset(test_enc)).predictions
    gold_tags, pred_tags = [], []
    for r, enc, lg in zip(test, test_enc, logits):
        pred = ["O"] * len(r["tokens"])  # words cut off by max_length count as O, as in ptm
        previous = None
        for t, w in enumerate(tok(r["tokens"], is_split_into_words=True, truncation=True, max_length=max_length).word_ids()):
            if w is not None and w != previous:
                pred[w] = labels[int(lg[t].argmax())]
            previous = w
        gold_tags.append(r["tags"])
        pred_tags.append(pred)
    report = seqeval_report(gold_tags, pred_tags, output_dict=True, zero_division=0)
    return {"micro_avg": report["micro avg"], "per_type": {k: v for k, v in report.items() if not k.endswith(" avg")}}


def similarity(name, epochs, batch, lr, max_length):
    import random

    from datasets import Dataset
    from scipy.stats import spearmanr
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import CosineSimilarityLoss

    train = read_jsonl(TMP / "bible-data" / "train.jsonl")
    test = read_jsonl(TMP / "bible-data" / "test.jsonl")
    train = random.Random(42).sample(train, len(train) // 2)  # ptm: --train-fraction 0.5 (another half)
    model = SentenceTransformer(str(MINILM), device="cpu")
    model.max_seq_length = max_length
    ds = Dataset.from_dict({"sentence1": [r["text"] for r in train], "sentence2": [r["text_pair"] for r in train],
                            "score": [float(r["score"]) for r in train]})
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(TMP / f"reference-{name}"), num_train_epochs=epochs, per_device_train_batch_size=batch,
        learning_rate=lr, weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="linear", max_grad_norm=1.0,
        seed=SEED, save_strategy="no", report_to=[], use_cpu=True)
    SentenceTransformerTrainer(model=model, args=targs, train_dataset=ds, loss=CosineSimilarityLoss(model)).train()
    a = model.encode([r["text"] for r in test], convert_to_tensor=True, normalize_embeddings=True)
    b = model.encode([r["text_pair"] for r in test], convert_to_tensor=True, normalize_embeddings=True)
    cos = (a * b).sum(-1).cpu().numpy()
    return {"spearman": float(spearmanr(cos, [r["score"] for r in test]).statistic)}


RUNS = {
    "rt": lambda: seq_cls("rt", "rotten_tomatoes", 1, 32, 5e-5, 64),
    "sms": lambda: seq_cls("sms", "sms_spam", 1, 32, 5e-5, 128),
    "wnut": lambda: token_cls("wnut", 2, 16, 5e-5, 128),
    "bible": lambda: similarity("bible", 1, 32, 2e-5, 128),
}


def main():
    global SEED
    torch.set_num_threads(os.cpu_count())
    OUT.mkdir(parents=True, exist_ok=True)
    names = sys.argv[1:]
    if names[:1] == ["--seed"]:
        SEED, names = int(names[1]), names[2:]
    suffix = "" if SEED == 42 else f"-seed{SEED}"
    for name in names or list(RUNS):
        start = time.time()
        result = RUNS[name]()
        result["seconds"] = round(time.time() - start)
        result["seed"] = SEED
        result["versions"] = {"torch": torch.__version__, "transformers": __import__("transformers").__version__}
        (OUT / f"reference-{name}{suffix}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
        print(name, json.dumps(result, default=float)[:300])


if __name__ == "__main__":
    main()
