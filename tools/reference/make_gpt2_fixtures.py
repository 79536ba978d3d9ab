"""Tiny random GPT-2 checkpoints, a tiny byte-level BPE tokenizer, and what transformers
computes with them: logits, losses, gradients and generate() outputs.

Writes under tests/fixtures/gpt2/:
  tiny-lm/, tiny-lm.ref.safetensors            GPT2LMHeadModel (gelu_new), right- and left-padded batches
  tiny-relu-untied/, ....ref.safetensors       relu, untied lm_head, scale_attn_by_inverse_layer_idx
  tiny-seq-cls/, tiny-seq-cls.ref.safetensors  GPT2ForSequenceClassification (pad token set)
  tiny-lm.generate.json                        greedy and beam-search ids from generate()

Run: $(tools/reference/setup-venv.sh) tools/reference/make_gpt2_fixtures.py
"""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, GPT2TokenizerFast

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "gpt2"

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
    "To be, or not to be, that is the question.",
    "In the beginning God created the heaven and the earth.",
    "We the people of the United States, in order to form a more perfect union.",
    "Pretrained models learn general language from large unlabeled corpora.",
] * 20

PROMPTS = ["The quick brown", "To be, or not", "In the beginning God created the", "A"]


def tiny_tokenizer():
    """Byte-level BPE with the 256 bytes, <|endoftext|> and 43 merges: 300 tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    assert tok.get_vocab_size() == 300, tok.get_vocab_size()
    fast = GPT2TokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    return fast


def tiny_config(**overrides):
    eot = 0  # <|endoftext|> is the first token the trainer adds
    cfg = dict(
        vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=37,
        activation_function="gelu_new", resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
        bos_token_id=eot, eos_token_id=eot, num_labels=3,
    )
    cfg.update(overrides)
    return GPT2Config(**cfg)


def randomize(model, seed):
    """O(1) random weights so every term shows; biases small, or one token would win every
    position and greedy decoding would test nothing."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "ln_" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * noise)
            elif name.endswith("bias"):
                p.copy_(0.02 * noise)
            else:
                p.copy_(0.3 * noise)


def batches(tok):
    """Right-padded (training style) and left-padded (generation style) batches of the same texts."""
    texts = ["The quick brown fox jumps.", "To be, or not to be", "A truth"]
    tok.pad_token = tok.eos_token  # GPT-2 has no pad token; padding positions are masked anyway
    out = {}
    for side in ("right", "left"):
        tok.padding_side = side
        b = tok(texts, padding=True, return_tensors="pt")
        out[side] = (b["input_ids"], b["attention_mask"])
    return out


def record(model, name, tok, kind):
    model.eval()
    tensors = {}
    for side, (ids, mask) in batches(tok).items():
        model.zero_grad()
        if kind == "lm":
            labels = ids.masked_fill(mask == 0, -100)
            # Positions as generate() derives them for left padding; plain arange otherwise.
            pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1) if side == "left" else None
            o = model(input_ids=ids, attention_mask=mask, position_ids=pos, labels=labels)
            outs = {"logits": o.logits}
            if pos is not None:
                tensors[f"{side}.in.position_ids"] = pos.contiguous()
        else:
            labels = torch.tensor([2, 0, 1])
            o = model(input_ids=ids, attention_mask=mask, labels=labels)
            outs = {"logits": o.logits}
        o.loss.backward()
        tensors[f"{side}.in.input_ids"] = ids.contiguous()
        tensors[f"{side}.in.attention_mask"] = mask.contiguous()
        tensors[f"{side}.label"] = labels.contiguous()
        tensors[f"{side}.out.loss"] = o.loss.detach().reshape(1)
        for k, v in outs.items():
            tensors[f"{side}.out.{k}"] = v.detach().contiguous()
        for pname, p in model.named_parameters():
            if p.grad is not None:
                tensors[f"{side}.grad.{pname}"] = p.grad.detach().contiguous()
    d = OUT / name
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    save_file(tensors, OUT / f"{name}.ref.safetensors")
    print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters")


def generations(model, tok):
    """generate() outputs: greedy and beam search, one prompt at a time and as a left-padded batch."""
    model.eval()
    tok.padding_side = "left"
    tok.pad_token = tok.eos_token
    cases = []
    settings = [
        {"do_sample": False, "max_new_tokens": 12},
        {"do_sample": False, "max_new_tokens": 10, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2},
        {"do_sample": False, "num_beams": 3, "max_new_tokens": 10},
        {"do_sample": False, "num_beams": 4, "max_new_tokens": 8, "length_penalty": 0.5, "num_return_sequences": 2},
        {"do_sample": False, "num_beams": 3, "max_new_tokens": 10, "early_stopping": True, "min_new_tokens": 4},
        # Frequent tokens as EOS, so that hypotheses finish before the length limit.
        {"do_sample": False, "max_new_tokens": 12, "eos_token_id": 262},
        {"do_sample": False, "num_beams": 3, "max_new_tokens": 10, "eos_token_id": 262},
        {"do_sample": False, "num_beams": 2, "max_new_tokens": 10, "eos_token_id": [56, 18], "early_stopping": True,
         "num_return_sequences": 2},
        {"do_sample": False, "num_beams": 3, "max_new_tokens": 10, "eos_token_id": 56, "early_stopping": "never",
         "length_penalty": 1.5},
    ]
    for s in settings:
        for batch in [[p] for p in PROMPTS] + [PROMPTS]:
            b = tok(batch, padding=True, return_tensors="pt")
            with torch.no_grad():
                out = model.generate(**b, pad_token_id=tok.eos_token_id, **s)
            new = out[:, b["input_ids"].shape[1]:]
            cases.append({
                "settings": s,
                "prompts": batch,
                "input_ids": b["input_ids"].tolist(),
                "attention_mask": b["attention_mask"].tolist(),
                "new_tokens": new.tolist(),
            })
    (OUT / "tiny-lm.generate.json").write_text(json.dumps(cases, indent=1) + "\n")
    print(f"{len(cases)} generate() cases")


PPL_TEXT = " ".join(CORPUS[:6])


def perplexity(model, tok, max_length=32, stride=16):
    """The sliding-window loop of transformers' perplexity documentation."""
    ids = tok(PPL_TEXT, return_tensors="pt").input_ids
    seq_len = ids.size(1)
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, seq_len, stride):
        end = min(begin + max_length, seq_len)
        trg_len = end - prev_end
        input_ids = ids[:, begin:end]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        num_loss_tokens = (target_ids != -100).sum().item() - target_ids.size(0)
        nll_sum += loss.item() * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end = end
        if end == seq_len:
            break
    ppl = float(torch.exp(torch.tensor(nll_sum / n_tokens)))
    (OUT / "tiny-lm.perplexity.json").write_text(json.dumps(
        {"text": PPL_TEXT, "max_length": max_length, "stride": stride, "perplexity": ppl, "tokens": n_tokens}, indent=1) + "\n")
    print(f"perplexity {ppl:.4f} over {n_tokens} tokens")


def processors():
    """transformers' logits processors on random scores: the filtered scores to match."""
    from transformers.generation.logits_process import (
        MinNewTokensLengthLogitsProcessor, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
    )
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(4, 300, generator=g) * 3
    ids = torch.randint(0, 300, (4, 12), generator=g)
    ids[:, -1] = ids[:, 3]  # so that the 2-gram starting at position 3 can repeat
    out = {"in.scores": scores, "in.input_ids": ids}
    cases = {
        "top_k_7": TopKLogitsWarper(7),
        "top_p_0.8": TopPLogitsWarper(0.8),
        "top_p_0.05": TopPLogitsWarper(0.05),
        "temperature_0.7": TemperatureLogitsWarper(0.7),
        "repetition_1.5": RepetitionPenaltyLogitsProcessor(1.5),
        "no_repeat_2": NoRepeatNGramLogitsProcessor(2),
        "min_new_tokens_5": MinNewTokensLengthLogitsProcessor(prompt_length_to_skip=10, min_new_tokens=5, eos_token_id=0),
    }
    for name, proc in cases.items():
        out[f"out.{name}"] = proc(ids, scores.clone()).contiguous()
    save_file(out, OUT / "processors.safetensors")
    print(f"{len(cases)} logits processors")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    processors()
    tok = tiny_tokenizer()
    torch.manual_seed(0)

    lm = GPT2LMHeadModel(tiny_config())
    randomize(lm, 1)
    record(lm, "tiny-lm", tok, "lm")
    generations(lm, tok)
    perplexity(lm.eval(), tok)

    untied = GPT2LMHeadModel(tiny_config(activation_function="relu", tie_word_embeddings=False,
                                         scale_attn_by_inverse_layer_idx=True))
    randomize(untied, 2)
    record(untied, "tiny-relu-untied", tok, "lm")

    tok.pad_token = tok.eos_token
    cls = GPT2ForSequenceClassification(tiny_config(pad_token_id=0))
    randomize(cls, 3)
    record(cls, "tiny-seq-cls", tok, "cls")


if __name__ == "__main__":
    main()
