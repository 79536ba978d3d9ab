"""Tiny random BERT checkpoints with every head, and what transformers computes with them.

For each model it writes a Hugging Face model directory under tests/fixtures/bert/<name>/ and
tests/fixtures/bert/<name>.ref.safetensors holding the inputs (`in.*`), the labels
(`label.*`), the outputs in eval mode (`out.*`) and the gradient of the loss with respect to
every parameter (`grad.<weight name>`).

Run: $(tools/reference/setup-venv.sh) tools/reference/make_bert_fixtures.py
"""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForNextSentencePrediction,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertTokenizer,
    pipeline,
)

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "bert"

# A 99-token WordPiece vocabulary: specials, letters, some words and suffixes.
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a of to and in is it that was he for on are as with his they at be this from".split()
    + "have or by one had not but what all were when we there can an your which their said".split()
    + "paris france capital city river cat dog sat mat big small good bad".split()
    + list("abcdefghijklmnopqrstuvwxyz")
    + [".", ",", "!", "?"]
)
SUFFIXES = ["##s", "##ed", "##ing", "##ly", "##er", "##est", "##y", "##a", "##e", "##i", "##o", "##n"]
VOCAB = list(dict.fromkeys(SPECIALS + WORDS + SUFFIXES))[:99]
assert len(VOCAB) == 99 and len(set(VOCAB)) == 99, len(set(VOCAB))


FILL_MASK_TEXTS = ["the cat sat on the [MASK].", "the [MASK] sat on the [MASK] in paris."]


def tiny_config(**overrides):
    cfg = dict(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=64,
        type_vocab_size=16,
        initializer_range=0.02,
        num_labels=3,
    )
    cfg.update(overrides)
    return BertConfig(**cfg)


def randomize(model, seed):
    """Replace every parameter by O(1) random values (LayerNorm weights around 1) so that
    every term of the computation shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.3
            p.copy_(1.0 + noise if name.endswith("LayerNorm.weight") else noise)


def inputs():
    g = torch.Generator().manual_seed(1)
    lengths = [9, 6, 4]
    ids = torch.randint(5, 99, (3, 9), generator=g)
    mask = torch.zeros(3, 9, dtype=torch.long)
    types = torch.zeros(3, 9, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, 0] = 2  # [CLS]
        ids[i, n - 1] = 3  # [SEP]
        ids[i, n:] = 0  # [PAD]
        types[i, n // 2 : n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def labels(x):
    g = torch.Generator().manual_seed(2)
    real = x["attention_mask"].bool()
    mlm = torch.full_like(x["input_ids"], -100)
    pick = (torch.rand(x["input_ids"].shape, generator=g) < 0.4) & real
    mlm[pick] = torch.randint(0, 99, (int(pick.sum()),), generator=g)
    tok = torch.randint(0, 3, x["input_ids"].shape, generator=g)
    tok[~real] = -100
    tok[:, 0] = -100
    return {
        "mlm": mlm,
        "nsp": torch.tensor([0, 1, 0]),
        "cls": torch.tensor([2, 0, 1]),
        "tok": tok,
        # 12 is past the sequence: transformers clamps it and ignores it.
        "start": torch.tensor([1, 2, 0]),
        "end": torch.tensor([3, 4, 12]),
        "regression": torch.tensor([0.5, -1.25, 2.0]),
        "multi": torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0]]),
    }


def run(model, kind, x, y):
    """Forward in eval mode with the head's labels; returns the outputs to record."""
    if kind == "base":
        o = model(**x)
        loss = o.last_hidden_state.pow(2).mean() + o.pooler_output.sum()
        return loss, {"last_hidden_state": o.last_hidden_state, "pooler_output": o.pooler_output}
    if kind == "pretraining":
        o = model(**x, labels=y["mlm"], next_sentence_label=y["nsp"])
        return o.loss, {"prediction_logits": o.prediction_logits, "seq_relationship_logits": o.seq_relationship_logits}
    if kind == "mlm":
        o = model(**x, labels=y["mlm"])
    elif kind == "nsp":
        o = model(**x, labels=y["nsp"])
    elif kind == "seq_cls":
        o = model(**x, labels=y["cls"])
    elif kind == "seq_regression":
        o = model(**x, labels=y["regression"])
    elif kind == "seq_multi":
        o = model(**x, labels=y["multi"])
    elif kind == "tok_cls":
        o = model(**x, labels=y["tok"])
    elif kind == "qa":
        o = model(**x, start_positions=y["start"], end_positions=y["end"])
        return o.loss, {"start_logits": o.start_logits, "end_logits": o.end_logits}
    return o.loss, {"logits": o.logits}


def record(model, kind, name, tokenizer):
    x, y = inputs(), None
    y = labels(x)
    model.eval()
    model.zero_grad()
    loss, outs = run(model, kind, x, y)
    loss.backward()
    tensors = {f"in.{k}": v.contiguous() for k, v in x.items()}
    tensors.update({f"label.{k}": v.contiguous() for k, v in y.items()})
    tensors.update({f"out.{k}": v.detach().contiguous() for k, v in outs.items()})
    tensors["out.loss"] = loss.detach().reshape(1)
    for pname, p in model.named_parameters():
        # With tie_word_embeddings=False, cls.predictions.bias exists but is unused.
        if p.grad is not None:
            tensors[f"grad.{pname}"] = p.grad.detach().contiguous()
    d = OUT / name
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    save_file(tensors, OUT / f"{name}.ref.safetensors")
    print(f"{name}: {kind}, loss {loss.item():.6f}, {sum(p.numel() for p in model.parameters())} parameters")


def with_base(cls, config, base_state, seed):
    """A head model sharing the base weights of `base_state`, its head random."""
    model = cls(config)
    randomize(model, seed)
    own = model.state_dict()
    shared = {k: v for k, v in base_state.items() if k.startswith("bert.") and k in own}
    model.load_state_dict(shared, strict=False)
    return model


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    vocab_file = OUT / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab_file))
    vocab_file.unlink()

    torch.manual_seed(0)
    a = tiny_config()
    pre = BertForPreTraining(a)
    randomize(pre, 10)
    base_state = pre.state_dict()
    record(pre, "pretraining", "tiny-pretraining", tokenizer)
    record(with_base(BertForMaskedLM, a, base_state, 11), "mlm", "tiny-mlm", tokenizer)
    record(with_base(BertForNextSentencePrediction, a, base_state, 12), "nsp", "tiny-nsp", tokenizer)
    record(with_base(BertForSequenceClassification, a, base_state, 13), "seq_cls", "tiny-seq-cls", tokenizer)
    record(with_base(BertForTokenClassification, a, base_state, 14), "tok_cls", "tiny-tok-cls", tokenizer)
    # What transformers' fill-mask pipeline answers with the masked-LM model.
    fill = pipeline("fill-mask", model=str(OUT / "tiny-mlm"), device="cpu")
    answers = {t: fill(t, top_k=3) for t in FILL_MASK_TEXTS}
    (OUT / "tiny-mlm.fill-mask.json").write_text(json.dumps(answers, indent=1) + "\n")

    # Span extraction needs exactly two outputs (start, end).
    record(with_base(BertForQuestionAnswering, tiny_config(num_labels=2), base_state, 15), "qa", "tiny-qa", tokenizer)

    # The bare encoder, saved with bare names (no "bert." prefix), as one file, as shards and
    # as a PyTorch pickle.
    bare = BertModel(a)
    bare.load_state_dict({k[len("bert.") :]: v for k, v in base_state.items() if k.startswith("bert.")})
    record(bare, "base", "tiny-base", tokenizer)
    shards = OUT / "tiny-base-sharded"
    shutil.rmtree(shards, ignore_errors=True)
    bare.save_pretrained(shards, max_shard_size="40KB")
    pickle = OUT / "tiny-base-bin"
    shutil.rmtree(pickle, ignore_errors=True)
    pickle.mkdir()
    a.save_pretrained(pickle)
    torch.save(bare.state_dict(), pickle / "pytorch_model.bin")

    # Other activations, an untied decoder, regression and multi-label losses.
    b = tiny_config(hidden_act="gelu_new", layer_norm_eps=1e-5, tie_word_embeddings=False, num_labels=1)
    m = BertForMaskedLM(b)
    randomize(m, 20)
    record(m, "mlm", "tiny-gelu-new-untied-mlm", tokenizer)
    record(with_base(BertForSequenceClassification, b, m.state_dict(), 21), "seq_regression", "tiny-gelu-new-regression", tokenizer)
    c = tiny_config(hidden_act="relu", classifier_dropout=0.0, problem_type="multi_label_classification")
    s = BertForSequenceClassification(c)
    randomize(s, 30)
    record(s, "seq_multi", "tiny-relu-multi-label", tokenizer)


if __name__ == "__main__":
    main()
