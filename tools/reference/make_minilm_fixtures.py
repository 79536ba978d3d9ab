"""Reference embeddings of the real all-MiniLM-L6-v2, made by sentence-transformers.

Writes tests/fixtures/minilm/texts.json (the texts and their token ids after truncation to
max_seq_length) and tests/fixtures/minilm/embeddings.safetensors:
  default        what SentenceTransformer.encode returns (mean pooling, normalised)
  mean / cls / max   those poolings of the token states, not normalised

Run: tools/fetch-minilm.sh && $(tools/reference/setup-venv.sh) tools/reference/make_minilm_fixtures.py
"""

import json
import os
import subprocess
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "minilm"

LONG = " ".join(
    ["The committee met again on Tuesday to review the annual budget, and after a long debate"]
    + ["about roads, schools, hospitals and the harbour, it agreed to meet once more next week."] * 20
)

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "",
    " ",
    "Hello, world!",
    "Café au lait, naïve résumé, Ångström, São Paulo, Zürich.",
    "我爱北京天安门。",
    "今天天气很好，我们去公园散步吧。",
    "深度学习改变了自然语言处理 (NLP) 的研究方法。",
    "東京は日本の首都です。",
    "서울은 한국의 수도입니다.",
    "Привет, как дела?",
    "مرحبا بالعالم",
    "I love pizza 🍕🍕 and tacos 🌮! 😀👍🏽",
    "   leading and trailing   spaces   ",
    "tabs\tand\nnewlines\r\nmixed",
    "The price is $1,234.56 (about €1.100) — 15% off!!!",
    "fn main() { println!(\"{}\", x.unwrap_or(42)); }",
    "UPPER CASE and MiXeD CaSe words",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    LONG,
]


def main():
    model_dir = subprocess.run(
        ["bash", str(ROOT / "tools" / "fetch-minilm.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    model = SentenceTransformer(model_dir, device="cpu")
    model.eval()
    assert model.max_seq_length == 256, model.max_seq_length

    default = model.encode(TEXTS, batch_size=8, convert_to_tensor=True, normalize_embeddings=False)
    features = model.tokenize(TEXTS)
    with torch.no_grad():
        out = model[0](features)
    h = out["token_embeddings"]
    mask = features["attention_mask"].unsqueeze(-1).to(h.dtype)
    mean = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    cls = h[:, 0]
    mx = h.masked_fill(mask == 0, float("-inf")).max(1).values

    ids = [
        [int(i) for i, m in zip(row, msk) if m]
        for row, msk in zip(features["input_ids"].tolist(), features["attention_mask"].tolist())
    ]
    assert max(len(x) for x in ids) == 256, "the long text must be truncated"

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "texts.json").write_text(
        json.dumps({"max_seq_length": 256, "texts": TEXTS, "input_ids": ids}, ensure_ascii=False, indent=1) + "\n"
    )
    save_file(
        {
            "default": default.float().contiguous(),
            "mean": mean.float().contiguous(),
            "cls": cls.float().contiguous(),
            "max": mx.float().contiguous(),
        },
        OUT / "embeddings.safetensors",
    )
    print(f"{len(TEXTS)} texts, embeddings {tuple(default.shape)}")


if __name__ == "__main__":
    main()
