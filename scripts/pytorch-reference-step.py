#!/usr/bin/env python3
"""Times one ALBEF pretraining step of the reference PyTorch code (salesforce/ALBEF), in fp32 and
under torch.autocast("cpu", dtype=torch.bfloat16), on synthetic batches: the baseline the bf16
issue compares against. Never a test dependency: run by hand (see README, "bf16 mixed precision").

  # What was run on this project's machine (Python 3.11, only PyPI reachable; torch's own index is
  # not): transformers 4.8.1 without its deps (tokenizers 0.10 has no 3.11 wheel and is not
  # imported by ALBEF's model code), its pure-python deps, timm 0.4.9 and a current torch.
  # PyPI's Linux torch wheel is the CUDA build: its nvidia-* deps must be installed for
  # `import torch` to work (it runs on the CPU all the same); torchvision (timm imports it) --no-deps.
  python3 -m venv vendor/torch-venv && . vendor/torch-venv/bin/activate
  pip install torch                          # 2.15.0 here (+ its CUDA runtime wheels, ~3 GB)
  pip install --no-deps transformers==4.8.1 huggingface-hub==0.0.12 timm==0.4.9 torchvision
  pip install sacremoses regex filelock packaging requests tqdm numpy pyyaml ruamel.yaml pillow
  # the reference code (models/ and configs/ of github.com/salesforce/ALBEF, unmodified; here
  # commit b9727e43), e.g.: git clone https://github.com/salesforce/ALBEF vendor/ALBEF
  python3 scripts/pytorch-reference-step.py --albef vendor/ALBEF --config base --batch 4 --text-length 30 --threads 2
  scripts/bench-pytorch base 3                # side by side with our binary, ratios

Patched here, not in the reference checkout: `concat_all_gather` (torch.distributed all_gather of
the momentum features) is the identity on one process (no process group is created), and
`BertForMaskedLM.from_pretrained` builds the model from its config (no download).

--config base uses the reference's configs/Pretrain.yaml + configs/config_bert.json (ViT-B/16 at
256 px, BERT-base, queue 65536); --config tiny builds the parity fixture's tiny architecture
(ViT 256x4 on 64 px, BERT 256x4, fusion from layer 2, vocab 8192, queue 1024) like configs/tiny.yaml.
No pretrained weights are loaded (timing only): BertForMaskedLM is built from its config.
"""
import argparse, statistics, sys, time, types


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--albef", required=True, help="checkout of github.com/salesforce/ALBEF")
    ap.add_argument("--config", default="base", choices=["base", "tiny"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--text-length", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--modes", default="fp32,bf16")
    a = ap.parse_args()
    sys.path.insert(0, a.albef)
    import torch
    from ruamel.yaml import YAML
    from models import xbert
    from models.model_pretrain import ALBEF

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = YAML(typ="safe").load(open(f"{a.albef}/configs/Pretrain.yaml"))
    bert_cfg = xbert.BertConfig.from_json_file(f"{a.albef}/configs/config_bert.json")
    if a.config == "tiny":
        cfg.update(image_res=64, vision_width=256, embed_dim=128, queue_size=1024)
        bert_cfg.update(dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                             fusion_layer=2, encoder_width=256, vocab_size=8192))
    tmp_bert = f"/tmp/albef-bert-{a.config}.json"
    open(tmp_bert, "w").write(bert_cfg.to_json_string())
    cfg["bert_config"] = tmp_bert
    # Timing only: a randomly initialised BERT instead of downloading bert-base-uncased.
    xbert.BertForMaskedLM.from_pretrained = classmethod(lambda cls, name, config=None: cls(config))
    if a.config == "tiny":
        import models.model_pretrain as mp
        from models.vit import VisionTransformer
        mp.VisionTransformer = lambda **kw: VisionTransformer(**{**kw, "embed_dim": 256, "depth": 4, "num_heads": 4})
    # One process, no torch.distributed group: the reference's all_gather of the momentum
    # features over one rank is the identity.
    import models.model_pretrain as mp_gather
    mp_gather.concat_all_gather = lambda t: t
    tok = types.SimpleNamespace(pad_token_id=0, cls_token_id=101, mask_token_id=103)
    model = ALBEF(config=cfg, text_encoder="bert-base-uncased", tokenizer=tok, init_deit=False)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.02)
    b, l, res = a.batch, a.text_length, cfg["image_res"]
    g = torch.Generator().manual_seed(1)
    image = torch.randn(b, 3, res, res, generator=g)
    ids = torch.randint(1000, bert_cfg.vocab_size, (b, l), generator=g)
    ids[:, 0] = 101
    text = types.SimpleNamespace(input_ids=ids, attention_mask=torch.ones(b, l, dtype=torch.long))
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"torch {torch.__version__}, {a.config}: {params} trainable parameters, batch {b}, text {l}, image {res}, threads {a.threads}")
    for mode in a.modes.split(","):
        times = []
        for s in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=(mode == "bf16")):
                loss_mlm, loss_ita, loss_itm = model(image, text, alpha=0.4)
                loss = loss_mlm + loss_ita + loss_itm
            loss.backward()
            opt.step()
            if s >= a.warmup:
                times.append(time.perf_counter() - t0)
        print(f"pytorch step: config={a.config} precision={mode} median_s={statistics.median(times):.3f} "
              f"min_s={min(times):.3f} max_s={max(times):.3f} loss={loss.item():.4f}")


if __name__ == "__main__":
    main()
