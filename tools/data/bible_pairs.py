"""Sentence-pair similarity data from ../shared/data/bible_parallel: the same verse in the KJV
(1769) and the WEB (modern English) is a paraphrase (score 1.0); a KJV verse with the WEB text
of a random verse from another book is not (score 0.0). Chapters whose number ends in 0 go to
the test split, so no verse is in both. Python standard library only; seeded.

Run: python3 tools/data/bible_pairs.py ../shared/data/bible_parallel/verses.jsonl OUT_DIR
Writes OUT_DIR/train.jsonl (4,000 pairs) and OUT_DIR/test.jsonl (1,000 pairs),
{"text", "text_pair", "score"}, half paraphrases.
"""

import json
import random
import sys
from pathlib import Path


def main():
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    rows = [json.loads(line) for line in src.open(encoding="utf-8")]
    rows = [r for r in rows if r.get("web") and r.get("kjv")]
    rng = random.Random(13)
    splits = {"train": [], "test": []}
    for r in rows:
        book, chapter, _ = r["ref"].split(".")
        splits["test" if int(chapter) % 10 == 0 else "train"].append(r)
    out.mkdir(parents=True, exist_ok=True)
    for name, n in [("train", 4000), ("test", 1000)]:
        pool = splits[name]
        chosen = rng.sample(pool, n)
        lines = []
        for i, r in enumerate(chosen):
            if i % 2 == 0:
                lines.append({"text": r["kjv"], "text_pair": r["web"], "score": 1.0})
            else:
                book = r["ref"].split(".")[0]
                other = rng.choice(pool)
                while other["ref"].split(".")[0] == book:
                    other = rng.choice(pool)
                lines.append({"text": r["kjv"], "text_pair": other["web"], "score": 0.0})
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
        print(f"{out / name}.jsonl: {len(lines)} pairs")


if __name__ == "__main__":
    main()
