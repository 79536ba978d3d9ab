"""A tiny random BERT token classifier and what transformers' token-classification pipeline
answers with it, for every aggregation strategy.

Writes tests/fixtures/pipelines/tiny-ner/ (a Hugging Face model directory: a
BertForTokenClassification with labels O, B-PER, I-PER, B-LOC, I-LOC and a WordPiece
tokenizer) and tests/fixtures/pipelines/tiny-ner.json: for each strategy (none, simple,
first, average, max) and each text, the pipeline's entities.

Run: $(tools/reference/setup-venv.sh) tools/reference/make_pipeline_fixtures.py
"""

import json
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import BertConfig, BertForTokenClassification, BertTokenizer, pipeline

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "pipelines"
NAME = "tiny-ner"

# Whole words, every letter alone and as a continuation (so any lowercase word splits into
# pieces rather than [UNK]), a few suffixes and punctuation. No digits and no apostrophe:
# those become [UNK], whose word the pipeline takes from the text.
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a of to and in is it was he on at from then mr his her visited estate miles".split()
    + "river city capital paris france london cat dog sat mat big small".split()
)
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
VOCAB = list(
    dict.fromkeys(
        SPECIALS
        + WORDS
        + LETTERS
        + ["##" + c for c in LETTERS]
        + ["##s", "##ed", "##ing", "##ly", "##er"]
        + [".", ",", "!", "?", "-"]
    )
)
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
STRATEGIES = ["none", "simple", "first", "average", "max"]

# Split words (Elizabeth, Pemberley), punctuation next to words, capitals, [UNK] (digits, the
# apostrophe), accents that the tokenizer strips (character offsets differ from byte
# offsets), runs of spaces.
TEXTS = [
    "Elizabeth Bennet visited Pemberley, then London!",
    "the cat sat on the mat in paris.",
    "Mr. Darcy's estate is 42 miles from Longbourn?",
    "Café Zürich  is a big city-river",
    "rivering capitalsly walked",
]


def randomize(model, seed):
    """Random weights that make the predicted labels vary from token to token: small ones in
    the encoder (larger ones make every token's state alike), O(1) ones in the classifier,
    LayerNorm weights around 1 and no biases in LayerNorm or the classifier."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * (1.0 if name.startswith("classifier") else 0.1)
            if name.endswith("LayerNorm.weight"):
                p.copy_(1.0 + noise)
            elif name.endswith("LayerNorm.bias") or name == "classifier.bias":
                p.zero_()
            else:
                p.copy_(noise)


def tokenizer():
    """The WordPiece tokenizer, loaded from a folder holding its vocab.txt: transformers 5's
    constructors can silently build a near-empty vocabulary from a file argument."""
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
        (Path(d) / "tokenizer_config.json").write_text(
            json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True})
        )
        tok = BertTokenizer.from_pretrained(d)
    assert len(tok) == len(VOCAB) and len(tok.get_vocab()) == len(VOCAB), len(tok)
    assert tok.convert_tokens_to_ids("##ing") == VOCAB.index("##ing")
    return tok


def main():
    tok = tokenizer()
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=20,
        max_position_embeddings=64,
        type_vocab_size=2,
        id2label=dict(enumerate(LABELS)),
        label2id={l: i for i, l in enumerate(LABELS)},
    )
    torch.manual_seed(0)
    model = BertForTokenClassification(config)
    randomize(model, 21)
    model.eval()
    d = OUT / NAME
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    # The saved directory must load back to the same vocabulary.
    assert len(BertTokenizer.from_pretrained(d)) == len(VOCAB)

    answers = {}
    for strategy in STRATEGIES:
        ner = pipeline("token-classification", model=str(d), aggregation_strategy=strategy, device="cpu")
        answers[strategy] = [
            [{k: (float(v) if k == "score" else v) for k, v in e.items()} for e in ner(text)]
            for text in TEXTS
        ]
    (OUT / f"{NAME}.json").write_text(json.dumps({"texts": TEXTS, "answers": answers}, indent=1) + "\n")
    for text, groups in zip(TEXTS, answers["simple"]):
        print(text, [(g["entity_group"], g["word"]) for g in groups])


if __name__ == "__main__":
    main()
