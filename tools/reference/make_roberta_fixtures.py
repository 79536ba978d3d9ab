"""Tiny random RoBERTa checkpoints with every head, a tiny byte-level BPE tokenizer, and what
transformers computes with them.

Writes under tests/fixtures/roberta/:
  <name>/                   a Hugging Face model directory (save_pretrained, safetensors) with
                            the tokenizer
  <name>.ref.safetensors    the inputs (`in.*`), the labels (`label.*`), the outputs in eval mode
                            (`out.*`, `out.loss`) and the gradient of the loss with respect to
                            every parameter (`grad.<weight name>`)
  tiny-mlm.fill-mask.json   transformers' fill-mask pipeline on two texts with <mask>
  tokenizer-ids.json        texts and pairs with the ids RobertaTokenizerFast gives them
and tests/fixtures/train/roberta-adamw.{safetensors,json}: make_train_fixtures.py's ten AdamW
steps on the masked-LM loss of tiny-mlm.

The batch is right-padded with <pad> (id 1) and holds single texts and sentence pairs
(`<s> A </s></s> B </s>`), so RoBERTa's position ids (counted from pad_token_id + 1 over the
real tokens, padding at pad_token_id) are checked where padding is.

Run: $(tools/reference/setup-venv.sh) tools/reference/make_roberta_fixtures.py
"""

import json
import shutil
import tempfile
from pathlib import Path

import tokenizers
import torch
import transformers
from safetensors.torch import load_file, save_file
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
    RobertaTokenizerFast,
    pipeline,
)
from transformers.models.roberta.modeling_roberta import RobertaEmbeddings

import make_train_fixtures  # the script beside this one

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "roberta"

# The versions that made the committed fixtures (requirements.txt pins them).
assert transformers.__version__ == "5.23.0", transformers.__version__
assert torch.__version__.split("+")[0] == "2.15.0", torch.__version__
assert tokenizers.__version__ == "0.23.3", tokenizers.__version__

CORPUS = [
    "the cat sat on the mat.",
    "the dog sat on the cat in paris.",
    "paris is the capital of france, and the river runs through the city.",
    "where is the big cat? the small dog is there.",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
    "Pretrained models learn general language from large unlabeled corpora.",
] * 20

# roberta-base's order: <s> <pad> </s> <unk> first, <mask> last.
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
VOCAB_SIZE = 300  # 4 specials, the 256 bytes, 39 merges, <mask>
PAD = 1

SINGLES = [
    "the cat sat on the mat.",
    "Hello world",
    " Hello world",
    "paris  is\tthe capital\nof france!",
    "naïve café — 東京 😀",
    "the <mask> sat on the mat.",
    "",
]
PAIRS = [
    ("where is paris?", "paris is the capital of france."),
    ("a dog", "the big cat sat"),
    ("the<mask>", " <mask> city"),
    ("the  <mask>", "<mask>  <mask>"),
]
FILL_MASK_TEXTS = ["the cat sat on the <mask>.", "the <mask> sat on the <mask> in paris."]

# The model batch: two single texts and two pairs of different lengths, right-padded.
BATCH = [
    ("the cat sat on the mat.", None),
    ("a dog", "the big cat"),
    ("a cat", None),
    ("paris", "the city."),
]


def tiny_tokenizer(folder):
    """Trains the byte-level BPE, writes vocab.json and merges.txt with <mask> appended, and
    loads them as transformers does from a checkpoint folder."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - 1,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    vocab = tok.get_vocab()
    assert len(vocab) == VOCAB_SIZE - 1, len(vocab)
    assert [vocab[s] for s in SPECIALS] == [0, 1, 2, 3]
    vocab["<mask>"] = VOCAB_SIZE - 1
    merges = json.loads(tok.to_str())["model"]["merges"]
    (folder / "vocab.json").write_text(json.dumps(dict(sorted(vocab.items(), key=lambda kv: kv[1]))))
    lines = [m if isinstance(m, str) else " ".join(m) for m in merges]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n")
    # As roberta-base's tokenizer.json has it: <mask> takes the space before it.
    fast = RobertaTokenizerFast.from_pretrained(folder, mask_token=AddedToken("<mask>", lstrip=True, rstrip=False))
    assert len(fast) == VOCAB_SIZE, len(fast)
    ids = [fast.bos_token_id, fast.pad_token_id, fast.eos_token_id, fast.unk_token_id, fast.mask_token_id]
    assert ids == [0, 1, 2, 3, VOCAB_SIZE - 1], ids
    assert fast.cls_token_id == 0 and fast.sep_token_id == 2
    return fast


def tiny_config(**overrides):
    cfg = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=64 + PAD + 1,
        type_vocab_size=1,
        initializer_range=0.02,
        layer_norm_eps=1e-5,
        pad_token_id=PAD,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=3,
    )
    cfg.update(overrides)
    return RobertaConfig(**cfg)


def randomize(model, seed):
    """Replace every parameter by O(1) random values (LayerNorm weights around 1) so that
    every term of the computation shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.3
            ln = name.endswith("LayerNorm.weight") or name.endswith("layer_norm.weight")
            p.copy_(1.0 + noise if ln else noise)


def inputs(tok):
    enc = [tok(a, b) for a, b in BATCH]
    x = tok.pad(enc, padding=True, return_tensors="pt")
    assert tok.padding_side == "right"
    ids, mask = x["input_ids"], x["attention_mask"]
    assert ids[:, -1].eq(PAD).any() and ids.eq(PAD).eq(mask == 0).all(), ids
    assert (ids == 2).sum(1).tolist() == [1, 3, 1, 3], ids  # </s>, and </s></s> ... </s> in pairs
    # RoBERTa's tokenizer gives no token types: the model takes row 0 of its one-row table.
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def labels(x):
    g = torch.Generator().manual_seed(2)
    ids = x["input_ids"]
    real = x["attention_mask"].bool()
    mlm = torch.full_like(ids, -100)
    pick = (torch.rand(ids.shape, generator=g) < 0.4) & real
    mlm[pick] = torch.randint(0, VOCAB_SIZE, (int(pick.sum()),), generator=g)
    tok = torch.randint(0, 3, ids.shape, generator=g)
    tok[~real] = -100
    tok[:, 0] = -100
    seq = ids.shape[1]
    return {
        "mlm": mlm,
        "cls": torch.tensor([2, 0, 1, 1]),
        "tok": tok,
        # Past the sequence: transformers clamps it and ignores it.
        "start": torch.tensor([1, 2, 0, 3]),
        "end": torch.tensor([3, 4, seq + 5, 6]),
    }


def run(model, kind, x, y):
    """Forward in eval mode with the head's labels; returns the loss and the outputs to record."""
    # As the tokenizer gives them: no token types.
    x = {k: v for k, v in x.items() if k != "token_type_ids"}
    if kind == "base":
        o = model(**x)
        loss = o.last_hidden_state.pow(2).mean() + o.pooler_output.sum()
        return loss, {"last_hidden_state": o.last_hidden_state, "pooler_output": o.pooler_output}
    if kind == "qa":
        o = model(**x, start_positions=y["start"], end_positions=y["end"])
        return o.loss, {"start_logits": o.start_logits, "end_logits": o.end_logits}
    label = {"mlm": "mlm", "seq_cls": "cls", "tok_cls": "tok"}[kind]
    o = model(**x, labels=y[label])
    return o.loss, {"logits": o.logits}


def record(model, kind, name, tok):
    x = inputs(tok)
    y = labels(x)
    model.eval()
    model.zero_grad()
    loss, outs = run(model, kind, x, y)
    loss.backward()
    tensors = {f"in.{k}": v.contiguous() for k, v in x.items()}
    tensors.update({f"label.{k}": v.contiguous() for k, v in y.items()})
    tensors.update({f"out.{k}": v.detach().contiguous() for k, v in outs.items()})
    tensors["out.loss"] = loss.detach().reshape(1)
    # The position ids transformers made: pads at padding_idx, tokens from padding_idx + 1.
    tensors["in.position_ids"] = RobertaEmbeddings.create_position_ids_from_input_ids(x["input_ids"], PAD)
    for pname, p in model.named_parameters():
        # Untied, lm_head.bias exists but is unused (the decoder has its own bias).
        if p.grad is not None:
            tensors[f"grad.{pname}"] = p.grad.detach().contiguous()
    d = OUT / name
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    save_file(tensors, OUT / f"{name}.ref.safetensors")
    print(f"{name}: {kind}, loss {loss.item():.6f}, {sum(p.numel() for p in model.parameters())} parameters")


def with_base(cls, config, base_state, seed):
    """A head model sharing the base weights of `base_state`, its head random."""
    model = cls(config)
    randomize(model, seed)
    own = model.state_dict()
    shared = {k: v for k, v in base_state.items() if k.startswith("roberta.") and k in own}
    model.load_state_dict(shared, strict=False)
    return model


def tokenizer_cases(tok):
    singles = [{"text": t, "ids": tok(t)["input_ids"]} for t in SINGLES]
    pairs = [{"a": a, "b": b, "ids": tok(a, b)["input_ids"]} for a, b in PAIRS]
    for case in singles + pairs:
        assert case["ids"][0] == 0 and case["ids"][-1] == 2, case
    # The texts of the models' batch, whose padded ids are `in.input_ids`.
    batch = [{"a": a, "b": b} for a, b in BATCH]
    return {"singles": singles, "pairs": pairs, "batch": batch}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tok = tiny_tokenizer(Path(tmp))
    (OUT / "tokenizer-ids.json").write_text(json.dumps(tokenizer_cases(tok), indent=1, ensure_ascii=False) + "\n")

    torch.manual_seed(0)
    a = tiny_config()
    mlm = RobertaForMaskedLM(a)
    randomize(mlm, 10)
    base_state = mlm.state_dict()
    record(mlm, "mlm", "tiny-mlm", tok)
    fill = pipeline("fill-mask", model=str(OUT / "tiny-mlm"), device="cpu")
    answers = {t: fill(t, top_k=3) for t in FILL_MASK_TEXTS}
    (OUT / "tiny-mlm.fill-mask.json").write_text(json.dumps(answers, indent=1, ensure_ascii=False) + "\n")

    record(with_base(RobertaForSequenceClassification, a, base_state, 11), "seq_cls", "tiny-seq-cls", tok)
    record(with_base(RobertaForTokenClassification, a, base_state, 12), "tok_cls", "tiny-tok-cls", tok)
    # Span extraction needs exactly two outputs (start, end).
    record(with_base(RobertaForQuestionAnswering, tiny_config(num_labels=2), base_state, 13), "qa", "tiny-qa", tok)

    # The bare encoder with its pooler, saved with bare names (no "roberta." prefix).
    bare = RobertaModel(a)
    randomize(bare, 14)
    bare.load_state_dict({k[len("roberta.") :]: v for k, v in base_state.items() if k.startswith("roberta.")}, strict=False)
    record(bare, "base", "tiny-base", tok)

    # hidden_act gelu_new (the LM head keeps its exact GELU) and an untied decoder.
    b = tiny_config(hidden_act="gelu_new", tie_word_embeddings=False)
    m = RobertaForMaskedLM(b)
    randomize(m, 20)
    record(m, "mlm", "tiny-gelu-new-untied-mlm", tok)

    adamw()


def adamw():
    """Ten AdamW steps on the masked-LM loss, as for the other families."""
    model = RobertaForMaskedLM.from_pretrained(OUT / "tiny-mlm").eval()
    ref = load_file(OUT / "tiny-mlm.ref.safetensors")
    x = {"input_ids": ref["in.input_ids"], "attention_mask": ref["in.attention_mask"]}
    make_train_fixtures.run("roberta", model, lambda: model(**x, labels=ref["label.mlm"]).loss)


if __name__ == "__main__":
    main()
