"""Checks that directories written by ptm load in transformers unchanged.

Checkpoints written by `ptm pretrain` (masked LM for BERT and RoBERTa, masked LM + next sentence, causal LM,
permutation LM) and by `ptm finetune` (RoBERTa, every task) load in the Auto classes and answer as ptm does.
For every tiny BERT, GPT-2, XLNet and RoBERTa fixture and the real all-MiniLM-L6-v2, `ptm convert` re-saves the model
(ptm's save_pretrained: config.json, model.safetensors, tokenizer files); transformers then
loads the result with the class its config names, reporting no missing or unexpected weights,
and computes the same outputs as from the original directory. The MiniLM copy also loads in
sentence-transformers and gives the same embeddings.

Run: cargo build --release && tools/fetch-minilm.sh && \
     $(tools/reference/setup-venv.sh) tools/reference/check_transformers_loads.py
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
import transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from transformers import AutoConfig, AutoTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PTM = os.environ.get("PTM_BIN", str(ROOT / "target" / "release" / "ptm"))
FIXTURES = [ROOT / "tests" / "fixtures" / family for family in ("bert", "gpt2", "xlnet", "roberta")]
TEXTS = ["the cat sat on the mat.", "paris is the capital of france", "a big dog"]


def load(path):
    config = AutoConfig.from_pretrained(path)
    cls = getattr(transformers, (config.architectures or ["BertModel"])[0])
    model, info = cls.from_pretrained(path, output_loading_info=True)
    return model.eval(), info


def outputs(model, tokenizer):
    if tokenizer is None:
        # A checkpoint without tokenizer files: fixed ids inside its vocabulary.
        vocab = model.config.vocab_size
        batch = {"input_ids": torch.arange(14).reshape(2, 7) * 7 % vocab}
    else:
        batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)
    return [v for v in out.values() if isinstance(v, torch.Tensor)]


def check_tiny(src, tmp):
    name = src.name
    dst = Path(tmp) / name
    subprocess.run([PTM, "convert", "--model", str(src), "--output", str(dst)], check=True, capture_output=True)
    a, _ = load(src)
    b, info = load(dst)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        return f"{name}: {problems}"
    has_tokenizer = any((src / f).is_file() for f in ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model"))
    tok = AutoTokenizer.from_pretrained(dst) if has_tokenizer else None
    diff = max((x - y).abs().max().item() for x, y in zip(outputs(a, tok), outputs(b, tok)))
    if diff != 0.0:
        return f"{name}: outputs differ by {diff}"
    print(f"ok  {name:32} {type(b).__name__}: no missing or unexpected weights, identical outputs")
    return None


def check_minilm(tmp):
    src = subprocess.run(
        ["bash", str(ROOT / "tools" / "fetch-minilm.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    dst = Path(tmp) / "minilm"
    subprocess.run([PTM, "convert", "--model", src, "--output", str(dst)], check=True, capture_output=True)
    _, info = load(dst)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        return f"minilm: {problems}"
    a = SentenceTransformer(src, device="cpu").encode(TEXTS, convert_to_tensor=True)
    b = SentenceTransformer(str(dst), device="cpu").encode(TEXTS, convert_to_tensor=True)
    diff = (a - b).abs().max().item()
    if diff != 0.0:
        return f"minilm: embeddings differ by {diff}"
    print(f"ok  {'all-MiniLM-L6-v2':32} BertModel + sentence-transformers: identical embeddings")
    return None


def check_generation(tmp, objective, config, tokenizer, new_tokens, ptm_flags, encode_kwargs):
    """A checkpoint `ptm pretrain --objective OBJECTIVE` writes loads in AutoModelForCausalLM with
    no missing weights, and its greedy tokens equal ptm generate's."""
    from transformers import AutoModelForCausalLM

    out = Path(tmp) / f"pretrained-{objective}"
    subprocess.run([PTM, "pretrain", "--objective", objective, "--config", str(config), "--tokenizer", str(tokenizer),
                    "--train", str(ROOT / "data" / "austen" / "persuasion.txt"), "--output", str(out), "--max-steps", "3",
                    "--batch-size", "4", "--seq-len", "32", "-q"], check=True, capture_output=True)
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    if any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")):
        return [f"pretrained {objective}: {info}"]
    ids = AutoTokenizer.from_pretrained(out)("It is a truth", return_tensors="pt", **encode_kwargs).input_ids
    hf_ids = model.eval().generate(ids, max_new_tokens=new_tokens, do_sample=False)[0, ids.shape[1]:].tolist()
    ours = json.loads(subprocess.run([PTM, "generate", "--model", str(out), *ptm_flags, "--max-new-tokens", str(new_tokens),
                                      "--format", "json", "It is a truth"], check=True, capture_output=True, text=True).stdout)
    if hf_ids[: len(ours["token_ids"])] != ours["token_ids"]:
        return [f"pretrained {objective} generate: {hf_ids} vs {ours['token_ids']}"]
    print(f"ok  {'ptm pretrain --objective ' + objective:32} {type(model).__name__}: complete, same greedy tokens")
    return []


def check_pretrained(tmp):
    """Checkpoints that `ptm pretrain` writes load in transformers' Auto classes with no missing
    weights, and give the same fill-mask answers and greedy generations as ptm."""
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining, pipeline

    failures = []
    data = ROOT / "data"
    roberta = FIXTURES[3] / "tiny-mlm"
    for name, objective, auto, config, tokenizer, mask in [
        ("bert", "mlm", AutoModelForMaskedLM, data / "tiny-bert.json", data / "tokenizer", "[MASK]"),
        ("bert", "mlm+nsp", AutoModelForPreTraining, data / "tiny-bert.json", data / "tokenizer", "[MASK]"),
        ("roberta", "mlm", AutoModelForMaskedLM, roberta / "config.json", roberta, "<mask>"),
    ]:
        out = Path(tmp) / f"pretrained-{name}-{objective}"
        subprocess.run([PTM, "pretrain", "--objective", objective, "--config", str(config),
                        "--tokenizer", str(tokenizer), "--train", str(data / "austen" / "persuasion.txt"),
                        "--output", str(out), "--max-steps", "3", "--batch-size", "4", "--seq-len", "32", "-q"],
                       check=True, capture_output=True)
        model, info = auto.from_pretrained(out, output_loading_info=True)
        if any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")):
            failures.append(f"pretrained {objective}: {info}")
        objective = f"{objective} ({name})"
        text = f"she was the {mask} of the two daughters."
        hf = pipeline("fill-mask", model=str(out), device="cpu")(text, top_k=3)
        ours = json.loads(subprocess.run([PTM, "fill-mask", "--model", str(out), "--top-k", "3", "--format", "json", text],
                                         check=True, capture_output=True, text=True).stdout)
        if [x["token"] for x in hf] != [x["token"] for x in ours] or max(abs(a["score"] - b["score"]) for a, b in zip(hf, ours)) > 1e-4:
            failures.append(f"pretrained {objective} fill-mask: {hf} vs {ours}")
        else:
            print(f"ok  {'ptm pretrain --objective ' + objective:32} {type(model).__name__}: complete, same fill-mask answers")

    gpt2 = FIXTURES[1] / "tiny-lm"
    failures += check_generation(tmp, "clm", gpt2 / "config.json", gpt2, 10, [], {})
    failures += check_generation(tmp, "plm", data / "tiny-xlnet.json", data / "tokenizer-xlnet", 6, ["--prefix", ""],
                                 {"add_special_tokens": False})
    return failures + check_finetuned(tmp)


def check_finetuned(tmp):
    """RoBERTa directories that `ptm finetune` writes for every task load in the task's Auto class
    with no missing weights; the classifier's probabilities equal `ptm predict`'s."""
    from transformers import (AutoModel, AutoModelForQuestionAnswering, AutoModelForSequenceClassification,
                              AutoModelForTokenClassification)

    failures = []
    texts = ["the cat sat on the mat", "Tokyo is a big city"]
    rows = {
        "seq-cls": [{"text": t, "label": ["cat", "city"][i % 2]} for i, t in enumerate(texts * 4)],
        "token-cls": [{"tokens": ["the", "cat", "sat", "in", "Tokyo"], "tags": ["O", "B-ANIMAL", "O", "O", "B-CITY"]}] * 8,
        "qa": [{"context": c, "question": "where ?", "answers": {"text": [a], "answer_start": [c.find(a)]}}
               for c, a in [(texts[0], "the mat"), (texts[1], "a big city")] * 4],
        "similarity": [{"text": a, "text_pair": b, "score": float(a == b)} for a in texts for b in texts] * 2,
    }
    autos = {"seq-cls": AutoModelForSequenceClassification, "token-cls": AutoModelForTokenClassification,
             "qa": AutoModelForQuestionAnswering, "similarity": AutoModel}
    for task, data in rows.items():
        train = Path(tmp) / f"{task}.jsonl"
        train.write_text("".join(json.dumps(r) + "\n" for r in data))
        out = Path(tmp) / f"finetuned-roberta-{task}"
        subprocess.run([PTM, "finetune", "--task", task, "--model", str(FIXTURES[3] / "tiny-base"), "--train", str(train),
                        "--output", str(out), "--epochs", "1", "--batch-size", "4", "--max-length", "32", "-q"],
                       check=True, capture_output=True)
        model, info = autos[task].from_pretrained(out, output_loading_info=True)
        if any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")):
            failures.append(f"finetuned roberta {task}: {info}")
            continue
        if task == "seq-cls":
            batch = AutoTokenizer.from_pretrained(out)(texts, padding=True, return_tensors="pt")
            with torch.no_grad():
                hf = model.eval()(**batch).logits.softmax(-1)
            ours = [json.loads(line) for line in subprocess.run(
                [PTM, "predict", "--model", str(out), "--input", str(train)], check=True, capture_output=True,
                text=True).stdout.splitlines()[:2]]
            names = [model.config.id2label[i] for i in range(model.config.num_labels)]
            diff = max(abs(hf[r, i].item() - ours[r]["scores"][n]) for r in range(2) for i, n in enumerate(names))
            if diff > 1e-4:
                failures.append(f"finetuned roberta seq-cls: probabilities differ by {diff}")
                continue
        print(f"ok  {'ptm finetune --task ' + task + ' (roberta)':32} {type(model).__name__}: complete")
    return failures


def main():
    dirs = sorted(p for root in FIXTURES for p in root.iterdir() if p.is_dir())
    names = [d.name for d in dirs]
    with tempfile.TemporaryDirectory() as tmp:
        failures = [f for f in [check_tiny(d, tmp) for d in dirs] + [check_minilm(tmp)] if f]
        failures += check_pretrained(tmp)
    for f in failures:
        print("FAIL", f)
    total = len(names) + 10
    print(f"transformers {transformers.__version__}: {total - len(failures)} of {total} directories load unchanged")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
