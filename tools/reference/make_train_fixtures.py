"""Ten optimizer steps as the transformers Trainer takes them, for the optimizer parity test.

On the tiny BERT pretraining fixture (MLM + NSP loss), the tiny GPT-2 (causal LM) and the tiny
XLNet (the permutation-LM loss of its two-stream fixture batch), dropout off: torch.optim.AdamW with
transformers' parameter groups (no weight decay on biases and LayerNorm weights), a linear
schedule with warmup (get_linear_schedule_with_warmup), gradient clipping to a global norm of
1.0. Saves the loss and learning rate of every step and every parameter after the last one:
tests/fixtures/train/{bert,gpt2,xlnet}-adamw.safetensors and .json.

Run: $(tools/reference/setup-venv.sh) tools/reference/make_train_fixtures.py
"""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import BertForPreTraining, GPT2LMHeadModel, XLNetLMHeadModel, get_linear_schedule_with_warmup

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "train"

STEPS, WARMUP, LR, WEIGHT_DECAY, MAX_NORM = 10, 3, 1e-2, 0.01, 1.0


def no_decay(name):
    """transformers' Trainer: biases and LayerNorm parameters (GPT-2's ln_*, XLNet's layer_norm)
    are not decayed."""
    return ("bias" in name or "LayerNorm" in name or "layer_norm" in name
            or any(p.startswith("ln_") for p in name.split(".")))


def bert():
    model = BertForPreTraining.from_pretrained(FIX / "bert" / "tiny-pretraining").eval()
    ref = load_file(FIX / "bert" / "tiny-pretraining.ref.safetensors")
    inputs = {k[3:]: v for k, v in ref.items() if k.startswith("in.")}
    return model, lambda: model(**inputs, labels=ref["label.mlm"], next_sentence_label=ref["label.nsp"]).loss


def gpt2():
    model = GPT2LMHeadModel.from_pretrained(FIX / "gpt2" / "tiny-lm").eval()
    ref = load_file(FIX / "gpt2" / "tiny-lm.ref.safetensors")
    ids, mask, labels = ref["right.in.input_ids"], ref["right.in.attention_mask"], ref["right.label"]
    return model, lambda: model(input_ids=ids, attention_mask=mask, labels=labels).loss


def xlnet():
    model = XLNetLMHeadModel.from_pretrained(FIX / "xlnet" / "bi").eval()
    ref = load_file(FIX / "xlnet" / "bi.ref.safetensors")
    inputs = dict(input_ids=ref["plm.input_ids"].long(), perm_mask=ref["plm.perm_mask"],
                  target_mapping=ref["plm.target_mapping"], labels=ref["plm.labels"], use_mems=False)
    return model, lambda: model(**inputs).loss


def run(name, model, loss_fn):
    params = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in params if not no_decay(n)], "weight_decay": WEIGHT_DECAY},
        {"params": [p for n, p in params if no_decay(n)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.999), eps=1e-8)
    sched = get_linear_schedule_with_warmup(opt, WARMUP, STEPS)
    losses, lrs, norms = [], [], []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM).item())
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        losses.append(loss.item())
    save_file({n: p.detach().contiguous() for n, p in params}, OUT / f"{name}-adamw.safetensors")
    (OUT / f"{name}-adamw.json").write_text(json.dumps({
        "steps": STEPS, "warmup": WARMUP, "lr": LR, "weight_decay": WEIGHT_DECAY, "max_grad_norm": MAX_NORM,
        "losses": losses, "lrs": lrs, "grad_norms": norms,
        "no_decay": sorted(n for n, _ in params if no_decay(n)),
    }, indent=1) + "\n")
    print(name, "losses", [round(x, 4) for x in losses])


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    run("bert", *bert())
    run("gpt2", *gpt2())
    run("xlnet", *xlnet())


if __name__ == "__main__":
    main()
