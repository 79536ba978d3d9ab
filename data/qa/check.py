#!/usr/bin/env python3
"""Validate data/qa/{train,test}.jsonl.  Standard library only.

Checks every line: valid JSON object with the expected fields and types;
answers.text and answers.answer_start non-empty and of equal length; every
answer text equals context[start:start+len(text)] (Python str indices, i.e.
Unicode code points); ids unique across both files; no context, and no
paragraph of a context, shared between train and test.  Prints counts and
exits non-zero on any error.

Usage:  python3 data/qa/check.py [DIR]   (DIR defaults to this script's folder)
"""
import json
import os
import sys
from collections import Counter

FIELDS = {"id": str, "title": str, "context": str, "question": str, "answers": dict}


def check_file(path, errors, ids):
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            where = f"{os.path.basename(path)}:{n}"
            if not line.strip():
                errors.append(f"{where}: blank line")
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(f"{where}: bad JSON: {e}")
                continue
            if not isinstance(r, dict):
                errors.append(f"{where}: not an object")
                continue
            bad = False
            for k, t in FIELDS.items():
                if not isinstance(r.get(k), t):
                    errors.append(f"{where}: field {k!r} missing or not {t.__name__}")
                    bad = True
            if bad:
                continue
            for k in ("id", "title", "context", "question"):
                if not r[k].strip():
                    errors.append(f"{where}: field {k!r} empty")
            a = r["answers"]
            texts, starts = a.get("text"), a.get("answer_start")
            if not (isinstance(texts, list) and isinstance(starts, list)
                    and texts and len(texts) == len(starts)):
                errors.append(f"{where}: answers.text / answers.answer_start must be "
                              f"non-empty lists of equal length")
                continue
            for t, s in zip(texts, starts):
                if not isinstance(t, str) or not t or type(s) is not int:
                    errors.append(f"{where}: bad answer entry {t!r} @ {s!r}")
                elif r["context"][s:s + len(t)] != t:
                    errors.append(f"{where}: answer {t!r} is not at offset {s} "
                                  f"(found {r['context'][s:s + len(t)]!r})")
            if r["id"] in ids:
                errors.append(f"{where}: duplicate id {r['id']!r} (first at {ids[r['id']]})")
            else:
                ids[r["id"]] = where
            rows.append(r)
    return rows


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    errors, ids, data = [], {}, {}
    for split in ("train", "test"):
        data[split] = check_file(os.path.join(d, f"{split}.jsonl"), errors, ids)

    ctx = {s: {r["context"] for r in rows} for s, rows in data.items()}
    shared = ctx["train"] & ctx["test"]
    if shared:
        errors.append(f"{len(shared)} context(s) appear in both train and test")
    paras = {s: {p for c in cs for p in c.split("\n")} for s, cs in ctx.items()}
    shared_p = paras["train"] & paras["test"]
    if shared_p:
        errors.append(f"{len(shared_p)} paragraph(s) appear in both train and test contexts")

    for split, rows in data.items():
        lens = [len(c) for c in ctx[split]]
        by_title = Counter(r["title"] for r in rows)
        print(f"{split}: {len(rows)} questions, {len(ctx[split])} contexts "
              f"(context chars {min(lens, default=0)}-{max(lens, default=0)}, "
              f"{sum(l > 2500 for l in lens)} over 2500); "
              + ", ".join(f"{t}: {c}" for t, c in sorted(by_title.items())))
    total = sum(len(rows) for rows in data.values())
    n_ans = sum(len(r["answers"]["text"]) for rows in data.values() for r in rows)
    print(f"total: {total} questions, {n_ans} answer spans, {len(ids)} unique ids")

    if errors:
        for e in errors[:50]:
            print("ERROR", e)
        print(f"FAILED: {len(errors)} error(s)")
        return 1
    print("OK: all answers are exact spans at their offsets; ids unique; "
          "train/test contexts disjoint")
    return 0


if __name__ == "__main__":
    sys.exit(main())
