"""Tiny random XLNet checkpoints and what transformers computes with them.

Writes under tests/fixtures/xlnet/, for each config (bi: attn_type "bi" with memory; uni:
attn_type "uni", same_length, clamp_len; bidata: bi_data with clamp_len):
  NAME/                    XLNetLMHeadModel (config.json + model.safetensors)
  NAME.ref.safetensors     inputs and outputs, batch-first (mems as (batch, mem_len, d_model)):
    seg1.*    a padded batch with segment ids, content stream only: hidden, logits, mems
    seg2.*    the next segment, reading seg1's mems: hidden, mems
    plm.*     perm_mask + target_mapping (two streams): hidden (query stream), logits, the
              loss against labels, and grad.<param> for every parameter
and the task heads on the bi config, each with a left-padded, segmented batch: logits, loss and
every gradient:
  seq-cls/, token-cls/, qa/ (+ .ref.safetensors)   XLNetForSequenceClassification (3 labels),
      XLNetForTokenClassification (4 labels), XLNetForQuestionAnsweringSimple
and generate.json: XLNetLMHeadModel.generate on bi (memory of the earlier steps, a dummy token
predicted by the query stream): greedy with each step's scores, and beam search. (transformers
cannot generate with attn_type uni: its in-place mask broadcast fails.)

and tiny-spiece/: an XLNetLMHeadModel with the real SentencePiece tokenizer of
tests/fixtures/tokenizers/xlnet-spiece (as XLNetTokenizer saves it), with tiny-spiece.json: the
mean of its last hidden states over the non-padding tokens of a left-padded batch (what
`ptm embed --pooling mean` computes) and greedy continuations of a prompt.

Run: $(tools/reference/setup-venv.sh) tools/reference/make_xlnet_fixtures.py [generate | spiece]
(with an argument, only that part).
"""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import (XLNetConfig, XLNetForQuestionAnsweringSimple, XLNetForSequenceClassification,
                          XLNetForTokenClassification, XLNetLMHeadModel)

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "xlnet"

CONFIGS = {
    "bi": dict(attn_type="bi", mem_len=6, reuse_len=None, bi_data=False, clamp_len=-1, same_length=False),
    "uni": dict(attn_type="uni", mem_len=4, reuse_len=3, bi_data=False, clamp_len=3, same_length=True),
    "bidata": dict(attn_type="bi", mem_len=6, reuse_len=None, bi_data=True, clamp_len=4, same_length=False),
}


def tiny_config(**overrides):
    cfg = dict(vocab_size=50, d_model=32, n_layer=2, n_head=4, d_inner=37, ff_activation="gelu",
               dropout=0.0, pad_token_id=5, bos_token_id=1, eos_token_id=2)
    cfg.update(overrides)
    return XLNetConfig(**cfg)


def randomize(model, seed):
    """O(1) weights so every term (content, position, segment) shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "layer_norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * noise)
            elif name.endswith("bias") and "rel_attn" not in name:
                p.copy_(0.02 * noise)
            else:
                p.copy_(0.3 * noise)


def plm_masks(g, batch, seq, num_predict):
    """A random factorisation order per row: position i may not see j when j comes later in the
    order or is i itself (for the query stream); the last num_predict positions of the order
    are the targets."""
    perm_mask = torch.zeros(batch, seq, seq)
    target_mapping = torch.zeros(batch, num_predict, seq)
    targets = torch.zeros(batch, num_predict, dtype=torch.long)
    for b in range(batch):
        order = torch.randperm(seq, generator=g)
        rank = torch.empty(seq, dtype=torch.long)
        rank[order] = torch.arange(seq)
        perm_mask[b] = (rank[None, :] >= rank[:, None]).float()
        for m, pos in enumerate(sorted(order[-num_predict:].tolist())):
            target_mapping[b, m, pos] = 1.0
            targets[b, m] = pos
    return perm_mask, target_mapping, targets


def save(model, name, ref):
    """The checkpoint as NAME/ and the reference, with every parameter's gradient, as NAME.ref."""
    for pname, p in model.named_parameters():
        if p.grad is not None:
            ref[f"grad.{pname}"] = p.grad.detach().clone()
    target = OUT / name
    shutil.rmtree(target, ignore_errors=True)
    model.save_pretrained(target)
    save_file({k: v.contiguous() for k, v in ref.items()}, str(OUT / f"{name}.ref.safetensors"))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for i, (name, extra) in enumerate(CONFIGS.items()):
        torch.manual_seed(i)
        model = XLNetLMHeadModel(tiny_config(**extra)).eval()
        randomize(model, 10 + i)
        g = torch.Generator().manual_seed(20 + i)
        ref = {}
        # Segment 1: a left-padded batch with two segments and XLNet's <cls> segment (2).
        ids = torch.randint(6, 50, (2, 7), generator=g)
        ids[1, :2] = 5
        attention_mask = torch.ones(2, 7)
        attention_mask[1, :2] = 0
        token_type_ids = torch.tensor([[0, 0, 0, 1, 1, 1, 2], [0, 0, 0, 0, 1, 1, 2]])
        uni = extra["attn_type"] == "uni"
        if uni:
            # transformers adds a padding or permutation mask to the causal one in place, which
            # cannot broadcast over a batch: uni runs without padding, and its PLM case with
            # one sequence.
            attention_mask = torch.ones(2, 7)
            ids[1, :2] = torch.randint(6, 50, (2,), generator=g)
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=None if uni else attention_mask, token_type_ids=token_type_ids,
                        use_mems=True, output_hidden_states=True)
        ref.update({"seg1.input_ids": ids.int(), "seg1.attention_mask": attention_mask,
                    "seg1.token_type_ids": token_type_ids.int(), "seg1.hidden": out.hidden_states[-1],
                    "seg1.logits": out.logits})
        for layer, m in enumerate(out.mems):
            ref[f"seg1.mems.{layer}"] = m.transpose(0, 1).contiguous()
        # Segment 2 reads segment 1's memory.
        ids2 = torch.randint(6, 50, (2, 5), generator=g)
        with torch.no_grad():
            out2 = model(input_ids=ids2, mems=out.mems, use_mems=True, output_hidden_states=True)
        ref.update({"seg2.input_ids": ids2.int(), "seg2.hidden": out2.hidden_states[-1], "seg2.logits": out2.logits})
        for layer, m in enumerate(out2.mems):
            ref[f"seg2.mems.{layer}"] = m.transpose(0, 1).contiguous()
        # Two-stream attention with a permutation mask, and the PLM loss with its gradients.
        rows = 1 if uni else 2
        ids3 = torch.randint(6, 50, (rows, 8), generator=g)
        perm_mask, target_mapping, targets = plm_masks(g, rows, 8, 3)
        labels = torch.gather(ids3, 1, targets)
        model.zero_grad()
        out3 = model(input_ids=ids3, perm_mask=perm_mask, target_mapping=target_mapping, labels=labels,
                     output_hidden_states=True, use_mems=False)
        out3.loss.backward()
        ref.update({"plm.input_ids": ids3.int(), "plm.perm_mask": perm_mask, "plm.target_mapping": target_mapping,
                    "plm.labels": labels, "plm.hidden": out3.hidden_states[-1].detach(),
                    "plm.logits": out3.logits.detach(), "plm.loss": out3.loss.detach().reshape(1)})
        save(model, name, ref)
        print(f"{name}: seg1 hidden {tuple(ref['seg1.hidden'].shape)}, plm loss {out3.loss.item():.4f}")
    heads()
    generation()
    spiece_model()


def generation():
    cases = []
    for name in ("bi",):
        model = XLNetLMHeadModel.from_pretrained(OUT / name).eval()
        g = torch.Generator().manual_seed(7)
        for prompt_len in (1, 6):
            prompt = torch.randint(6, 50, (1, prompt_len), generator=g)
            with torch.no_grad():
                greedy = model.generate(prompt, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=5,
                                        output_scores=True, return_dict_in_generate=True)
                beams = model.generate(prompt, max_new_tokens=6, num_beams=3, num_return_sequences=2,
                                       eos_token_id=None, pad_token_id=5)
            cases.append({
                "model": name, "prompt": prompt[0].tolist(),
                "greedy": greedy.sequences[0, prompt_len:].tolist(),
                "scores": [s[0].tolist() for s in greedy.scores],
                "beams": [b[prompt_len:].tolist() for b in beams],
            })
            print(f"{name} generate from {prompt_len} tokens: {cases[-1]['greedy']}")
    (OUT / "generate.json").write_text(json.dumps(cases) + "\n")


EMBED_TEXTS = ["Botchan went to the school.", "A cat.", "He said nothing, and the others laughed at him."]


def spiece_model():
    from transformers import XLNetTokenizer

    tok = XLNetTokenizer.from_pretrained(ROOT / "tests" / "fixtures" / "tokenizers" / "xlnet-spiece")
    torch.manual_seed(5)
    cfg = tiny_config(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, mem_len=None, **{k: v for k, v in CONFIGS["bi"].items() if k != "mem_len"})
    model = XLNetLMHeadModel(cfg).eval()
    randomize(model, 55)
    target = OUT / "tiny-spiece"
    shutil.rmtree(target, ignore_errors=True)
    model.save_pretrained(target)
    tok.save_pretrained(target)
    batch = tok(EMBED_TEXTS, padding=True, return_tensors="pt", return_token_type_ids=True)
    with torch.no_grad():
        hidden = model.transformer(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    mean = (hidden * mask).sum(1) / mask.sum(1)
    prompt = tok("Botchan said", add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id)
    (OUT / "tiny-spiece.json").write_text(json.dumps({
        "texts": EMBED_TEXTS, "mean_embeddings": mean.tolist(), "input_ids": batch["input_ids"].tolist(),
        "prompt": "Botchan said", "prompt_ids": prompt[0].tolist(), "greedy": out[0, prompt.shape[1]:].tolist(),
    }) + "\n")
    print("tiny-spiece:", len(tok), "tokens; greedy", out[0, prompt.shape[1]:].tolist())


def heads():
    g = torch.Generator().manual_seed(99)
    ids = torch.randint(6, 50, (2, 9), generator=g)
    ids[1, :3] = 5
    attention_mask = torch.ones(2, 9)
    attention_mask[1, :3] = 0
    token_type_ids = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 2], [0, 0, 0, 0, 0, 1, 1, 1, 2]])
    cases = {
        "seq-cls": (XLNetForSequenceClassification, 3, {"labels": torch.tensor([2, 0])}),
        "token-cls": (XLNetForTokenClassification, 4, {"labels": torch.randint(0, 4, (2, 9), generator=g)}),
        "qa": (XLNetForQuestionAnsweringSimple, 2, {"start_positions": torch.tensor([4, 6]),
                                                      "end_positions": torch.tensor([6, 7])}),
    }
    for i, (name, (cls, labels, targets)) in enumerate(cases.items()):
        torch.manual_seed(100 + i)
        model = cls(tiny_config(num_labels=labels, summary_last_dropout=0.0, **CONFIGS["bi"])).eval()
        randomize(model, 200 + i)
        out = model(input_ids=ids, attention_mask=attention_mask, token_type_ids=token_type_ids, use_mems=False, **targets)
        out.loss.backward()
        ref = {"input_ids": ids.int(), "attention_mask": attention_mask, "token_type_ids": token_type_ids.int(),
               "loss": out.loss.detach().reshape(1)}
        ref.update({k: v for k, v in targets.items()})
        if name == "qa":
            ref.update({"start_logits": out.start_logits.detach(), "end_logits": out.end_logits.detach()})
        else:
            ref["logits"] = out.logits.detach()
        save(model, name, ref)
        print(f"{name}: loss {out.loss.item():.4f}")


if __name__ == "__main__":
    import sys

    {"generate": generation, "spiece": spiece_model}.get(sys.argv[1] if sys.argv[1:] else "", main)()
