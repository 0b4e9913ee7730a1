"""Artifact contracts: every artifact one stage writes and another stage (or a user) reads, written by `write(root)` in
one process and read back by `read(root)` in another (`python tests/contracts.py ROOT`). Each side returns the numbers it
computes from the artifact (logits, scores, losses, tokens, rows), so the test can hold the reader's against the
writer's. The writer computes its numbers from the objects it had in memory, not from what it wrote."""
import json, shutil, sys, traceback
from pathlib import Path
import torch

NAMES = ("select_moe_model", "router_full_rank", "router_lora", "router_data", "selection", "adapter", "token_shards",
         "teacher_shards", "router_stats", "nexus_model", "parscale_model", "polychromatic_model", "engine_checkpoint",
         "results_table")

def x_ids(b=3, t=12, seed=7):
    return torch.randint(5, 4000, (b, t), generator=torch.Generator().manual_seed(seed))

def records(n=24):
    from moe_nb.embedded import embedded_instructions
    return embedded_instructions(n, bad_fraction=0.3, seed=0)[0]

def fwd(m, x=None, **kw):
    x = x_ids() if x is None else x
    with torch.no_grad(): return m.eval()(input_ids=x, **kw)

def gates(m):
    return torch.stack([g["quality_score"] for g in fwd(m, output_router_logits=True).router_logits])

def perturb(m, seed=0):
    "Pretend training: move every trainable parameter."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(m.named_parameters()):
            if p.requires_grad: p.add_(0.1 * torch.randn(p.shape, generator=g))
    return m

def olmoe():
    from moe_nb.zoo import load_backbone
    return load_backbone("tiny-olmoe-random")  # seed 0: the same weights in every process

def stock(family:str):
    "A tiny random Qwen3 or Llama from its stock config (seeded: the same weights in every process)."
    from transformers import Qwen3Config, LlamaConfig, AutoModelForCausalLM
    kw = dict(vocab_size=4096, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=128)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(Qwen3Config(**kw, head_dim=8) if family == "qwen3" else LlamaConfig(**kw))

def gpt_oss():
    from moe_nb.zoo import load_backbone
    return load_backbone("tiny-gpt_oss-random")

def blocks(tok, n=12, t=32):
    from moe_nb.embedded import corpus_blocks
    return corpus_blocks(tok, 20, t, n_eval=2, seed=0)[0][:n]

def score_all(router, recs, tok) -> dict:
    "Router data with every score field: the router's statistics, its gate derivatives, and a small LM's scores."
    from moe_nb.select_moe.router_data import compute_router_data
    from moe_nb.select_moe.scores import gate_scores, lm_scores
    from moe_nb.zoo import load_backbone
    data = compute_router_data(router, recs, tok, batch_size=8, max_len=64)
    data.update(gate_scores(router, recs, tok, batch_size=8, max_len=64))
    data.update(lm_scores(load_backbone("tiny-qwen2-random", num_hidden_layers=1), recs, tok, batch_size=8, max_len=64))
    return data

def tiny_trainer(run_dir, steps, save_every):
    from moe_nb.zoo import load_backbone
    from moe_nb.engine import Trainer, TrainConfig
    data = torch.randint(0, 4000, (32, 16), generator=torch.Generator().manual_seed(3))
    cfg = TrainConfig(steps=steps, batch_size=4, lr=3e-3, warmup_steps=1, log_every=1, save_every=save_every, tracker="none",
                      progress=False, cpu=True, seed=2, keep_checkpoints=5)
    return Trainer(load_backbone("tiny-qwen2-random", num_hidden_layers=1), cfg, data, run_dir=run_dir)

# ---------------------------------------------------------------------------------------------------- the writer
def write(root:Path) -> dict:
    from moe_nb.embedded import get_tokenizer
    from moe_nb.select_moe.model import convert_olmoe_to_select_moe
    from moe_nb.select_moe.router import prepare_router_training, save_router
    from moe_nb.select_moe.router_data import save_router_data
    from moe_nb.select_moe.selection import select_from_router_data
    from moe_nb.engine import Trainer, TrainConfig, add_lora
    from moe_nb.select_moe.finetune import save_adapter
    from moe_nb.tokens import write_token_shards, TokenShards, PackedBlocks
    from moe_nb.nexus.distill import precompute_teacher
    from moe_nb.nexus.model import collect_router_stats, choose_experts, add_shared_experts
    from moe_nb.parscale.model import convert_to_parscale_model, add_prefix_reparam, fold_prefix_reparam
    from moe_nb.polychromatic.model import PolychromaticLM, VanillaLM, poly_config, save_polychromatic
    from moe_nb.eval import results_table
    from moe_nb.select_moe.experiment import append_results, eval_rows, summarize
    from moe_nb.core import save_json, save_jsonl
    from moe_nb.zoo import load_backbone
    tok, ref = get_tokenizer(), {}

    torch.manual_seed(0)  # a converted Select-MoE model with a custom trash expert named in its config
    sm = convert_olmoe_to_select_moe(olmoe(), quality_gate_init_std=0.3, trash_expert_mode="custom", trash_expert_custom="torch:tanh")
    sm.save_pretrained(root/"select_moe_model")
    o = fwd(sm, output_router_logits=True)
    ref["select_moe_model"] = {"logits": o.logits, "gates": torch.stack([g["quality_score"] for g in o.router_logits])}

    routers = {}
    for mode in ("full_rank", "lora"):  # Stage 1 -> 2: a trained router, as the warmup saves it
        m, _ = prepare_router_training(convert_olmoe_to_select_moe(olmoe(), seed=1), mode, lora_r=4)
        perturb(m, seed=2)
        save_router(m, root/f"router_{mode}", base_model="tiny-olmoe-random", mode=mode)
        ref[f"router_{mode}"] = {"logits": fwd(m).logits, "gates": gates(m)}
        routers[mode] = m

    recs = records()  # Stage 2 -> 2b: router data of the full-rank router
    data = score_all(routers["full_rank"], recs, tok)  # the router's statistics and every score field (version 2)
    save_router_data(root/"router_data", data, recs)
    ref["router_data"] = {"data": data, "ids": [r.get("id", str(i)) for i, r in enumerate(recs)]}

    rep = select_from_router_data(root/"router_data", root/"selection", selection_percentage=0.25, k_range=(2, 4), seed=0)
    ref["selection"] = {"ids": rep["selected_ids"], "files": {p.name: p.read_bytes() for p in sorted((root/"selection"/"selected").iterdir())}}

    base = load_backbone("tiny-qwen2-random", num_hidden_layers=1)  # Stage 3 -> 4: a trained LoRA adapter
    peft = add_lora(base, r=4, target_modules=["q_proj", "v_proj"])
    tr = Trainer(peft, TrainConfig(steps=3, batch_size=4, lr=1e-2, warmup_steps=1, tracker="none", progress=False, cpu=True),
                 torch.randint(0, 4000, (16, 12), generator=torch.Generator().manual_seed(0)), run_dir=root/"adapter_run")
    tr.fit()
    save_adapter(tr, root/"adapter", base_model="tiny-qwen2-random")
    ref["adapter"] = {"logits": fwd(tr.unwrapped).logits}

    docs = [t for d in __import__("moe_nb.embedded", fromlist=["embedded_corpus"]).embedded_corpus(15, seed=0).values() for t in d]
    write_token_shards(docs, tok, root/"token_shards", source="contract", shard_tokens=2000)
    pb = PackedBlocks(TokenShards(root/"token_shards", tok), 64)
    ref["token_shards"] = {"blocks": [pb[i] for i in range(len(pb))], "docs": docs}

    gpt = gpt_oss().eval()
    bl = blocks(tok)  # NEXUS: teacher shards, router statistics, expert choice, converted model
    precompute_teacher(gpt, bl, root/"teacher_shards", k=8, batch_size=4, rows_per_shard=5, progress=False)
    with torch.no_grad(): z = torch.cat([gpt(input_ids=bl[i:i + 4], attention_mask=torch.ones_like(bl[i:i + 4])).logits.float() for i in range(0, len(bl), 4)])  # its batches
    v, ix = z.topk(8, -1)
    ref["teacher_shards"] = {"values": v.half().float(), "indices": ix, "logz": z.logsumexp(-1), "blocks": bl}

    st = collect_router_stats(gpt, bl, target_tokens=300, batch_size=4, source="contract", progress=False)
    st.save(root/"router_stats.safetensors")
    choice = choose_experts(st, k=3)
    save_json(choice, root/"expert_choice.json")
    nx = add_shared_experts(gpt, "pca_topK", choice=choice, scale=0.3, inplace=False)
    ref["router_stats"] = {"probs": st.probs, "counts": st.counts, "choice": choice, "logits": fwd(nx).logits}

    nl = add_shared_experts(gpt, "top1", stats=st, scale=0.5, learnable_scale=True, inplace=False)
    with torch.no_grad(): nl.model.layers[0].mlp.shared_scale.fill_(0.37)
    ng = perturb(add_shared_experts(gpt, "pca_topK", choice=choice, scale=0.3, gate=True, inplace=False))  # a trained gate per token
    nx.save_pretrained(root/"nexus_model"/"fixed"); nl.save_pretrained(root/"nexus_model"/"learnable"); ng.save_pretrained(root/"nexus_model"/"gated")
    ref["nexus_model"] = {"fixed": fwd(nx).logits, "learnable": fwd(nl).logits, "gated": fwd(ng).logits}

    torch.manual_seed(0)
    ps = convert_to_parscale_model(load_backbone("tiny-qwen2-random"), P=3, n_tokens=4)
    ps.save_pretrained(root/"parscale_model")
    ref["parscale_model"] = {"logits": fwd(ps).logits, "gen": ps.generate(x_ids(1, 6), max_new_tokens=5, do_sample=False, pad_token_id=0)}
    for fam in ("qwen3", "llama"):  # the other families, and trained prefixes folded out of their reparameterisation
        pf = perturb(convert_to_parscale_model(stock(fam), P=2, n_tokens=4))
        pf.save_pretrained(root/"parscale_families"/fam); ref["parscale_model"][fam] = fwd(pf).logits
    torch.manual_seed(0)
    pr = convert_to_parscale_model(load_backbone("tiny-qwen2-random"), P=2, n_tokens=4)
    add_prefix_reparam(pr, r=4, hidden=8); perturb(pr)
    ref["parscale_model"]["folded"] = fwd(pr).logits
    fold_prefix_reparam(pr).save_pretrained(root/"parscale_families"/"folded")

    torch.manual_seed(0)
    cfg = poly_config("tiny", n_layers=1)
    poly, van = perturb(PolychromaticLM(cfg)), perturb(VanillaLM(cfg))
    for m in (poly, van):
        for mod in m.modules():
            if hasattr(mod, "tau"): mod.tau.fill_(0.37)  # annealed
    save_polychromatic(poly, root/"polychromatic_model"/"poly", tok); save_polychromatic(van, root/"polychromatic_model"/"vanilla", tok)
    x = x_ids()
    ref["polychromatic_model"] = {"poly": fwd(poly).logits, "vanilla": fwd(van).logits,
                                  "loss": poly(input_ids=x, labels=x).loss.detach()}

    tr = tiny_trainer(root/"engine_checkpoint", steps=6, save_every=3)  # a run to resume in another process
    hist = tr.fit()
    ref["engine_checkpoint"] = {"losses": [h["loss"] for h in hist], "final": {n: p.detach().clone() for n, p in tr.unwrapped.named_parameters()}}

    res = {"results": {"moe_nb_heldout": {"alias": "moe_nb_heldout", "acc,none": 0.25, "acc_stderr,none": 0.05},
                       "moe_nb_answers": {"perplexity,none": 11.5, "perplexity_stderr,none": 0.7, "acc,none": 0.1}}}
    rows = []
    for seed in (0, 1):  # two evaluation runs as select_moe_eval leaves them, and the appended results table
        rd = root/"results_table"/"runs"/"select_moe_eval"/f"run{seed}"
        save_json({"status": "completed", "provenance": {"model": "tiny", "selection": "random", "percentage": 0.05, "seed": seed}}, rd/"metrics.json")
        res["results"]["moe_nb_heldout"]["acc,none"] += 0.1 * seed
        save_jsonl(results_table(res), rd/"lm_eval_table.jsonl")
    rows = eval_rows(root/"results_table"/"runs")
    append_results(root/"results_table"/"results.jsonl", rows)
    ref["results_table"] = {"rows": rows, "summary": summarize(rows)}
    return ref

# ---------------------------------------------------------------------------------------------------- the reader
def read(root:Path) -> dict:
    import moe_nb.select_moe.model, moe_nb.nexus.model, moe_nb.parscale.model  # noqa: F401  (register the model classes)
    from transformers import AutoModelForCausalLM
    from moe_nb.embedded import get_tokenizer
    tok, out = get_tokenizer(), {}

    def select_moe_model():
        o = fwd(AutoModelForCausalLM.from_pretrained(root/"select_moe_model"), output_router_logits=True)
        return {"logits": o.logits, "gates": torch.stack([g["quality_score"] for g in o.router_logits])}

    def router(mode):
        from moe_nb.select_moe.router import load_router
        m = load_router(root/f"router_{mode}")
        return {"logits": fwd(m).logits, "gates": gates(m)}

    def router_data():
        from moe_nb.select_moe.router import load_router
        from moe_nb.select_moe.router_data import load_router_data, _FIELDS, SCORE_FIELDS
        d = load_router_data(root/"router_data")
        recs = records()
        by_id = {r["id"]: (name, j) for name, v in d.items() for j, r in enumerate(v["records"])}
        ids = [r.get("id", str(i)) for i, r in enumerate(recs)]
        loaded = {k: torch.stack([d[by_id[i][0]][k][by_id[i][1]] for i in ids]) for k in _FIELDS + SCORE_FIELDS}
        again = score_all(load_router(root/"router_full_rank"), recs, tok)
        return {"loaded": loaded, "recomputed": again, "ids": ids}

    def selection():
        from moe_nb.select_moe.selection import select_from_router_data
        from moe_nb.select_moe.finetune import read_selected
        tmp = root/"selection_again"
        rep = select_from_router_data(root/"router_data", tmp, selection_percentage=0.25, k_range=(2, 4), seed=0)
        files = {p.name: p.read_bytes() for p in sorted((tmp/"selected").iterdir())}
        shutil.rmtree(tmp)
        return {"ids": rep["selected_ids"], "files": files, "read": [r["id"] for r in read_selected(root/"selection"/"selected_data.jsonl")]}

    def adapter():
        from moe_nb.select_moe.finetune import load_adapted
        from moe_nb.zoo import load_backbone
        return {"logits": fwd(load_adapted(load_backbone("tiny-qwen2-random", num_hidden_layers=1), root/"adapter")).logits}

    def token_shards():
        from moe_nb.tokens import write_token_shards, TokenShards, PackedBlocks
        from moe_nb.embedded import embedded_corpus
        pb = PackedBlocks(TokenShards(root/"token_shards", tok, verify="sha256"), 64)
        docs = [t for d in embedded_corpus(15, seed=0).values() for t in d]
        write_token_shards(docs, tok, root/"shards_again", source="contract", shard_tokens=2000)
        same = all((root/"shards_again"/p.name).read_bytes() == p.read_bytes() for p in (root/"token_shards").glob("shard-*.bin"))
        return {"blocks": [pb[i] for i in range(len(pb))], "bytes_equal": same, "n_files": len(list((root/"token_shards").glob("shard-*.bin")))}

    def teacher_shards():
        from moe_nb.nexus.distill import TeacherShards
        ts = TeacherShards(root/"teacher_shards", vocab_size=gpt_oss().config.vocab_size, seq_len=32)
        items = [ts[i] for i in range(len(ts))]
        return {"values": torch.stack([i["teacher_values"] for i in items]), "indices": torch.stack([i["teacher_indices"] for i in items]),
                "logz": torch.stack([i["teacher_logz"] for i in items]), "blocks": torch.stack([i["input_ids"] for i in items])}

    def router_stats():
        from moe_nb.nexus.model import RouterStats, choose_experts, add_shared_experts
        from moe_nb.core import load_json
        st = RouterStats.load(root/"router_stats.safetensors")
        saved = load_json(root/"expert_choice.json")
        nx = add_shared_experts(gpt_oss().eval(), "pca_topK", choice=saved, scale=0.3)
        return {"probs": st.probs, "counts": st.counts, "choice": choose_experts(st, k=3), "saved_choice": saved, "logits": fwd(nx).logits}

    def nexus_model():
        from moe_nb.nexus.model import load_nexus
        return {k: fwd(load_nexus(root/"nexus_model"/k)).logits for k in ("fixed", "learnable", "gated")}

    def parscale_model():
        from moe_nb.parscale.model import load_parscale
        ps = load_parscale(root/"parscale_model", P=3).eval()
        return {"logits": fwd(ps).logits, "gen": ps.generate(x_ids(1, 6), max_new_tokens=5, do_sample=False, pad_token_id=0),
                **{k: fwd(load_parscale(root/"parscale_families"/k, P=2)).logits for k in ("qwen3", "llama", "folded")}}

    def polychromatic_model():
        from moe_nb.polychromatic.model import load_polychromatic
        poly, van = load_polychromatic(root/"polychromatic_model"/"poly"), load_polychromatic(root/"polychromatic_model"/"vanilla")
        x = x_ids()
        return {"poly": fwd(poly).logits, "vanilla": fwd(van).logits, "loss": poly(input_ids=x, labels=x).loss.detach(),
                "tau": [float(m.tau) for m in poly.modules() if hasattr(m, "tau")]}

    def engine_checkpoint():
        src = root/"engine_checkpoint"
        run = root/"engine_resumed"
        shutil.copytree(src, run)
        shutil.rmtree(run/"checkpoints"/"step-0000006")
        tr = tiny_trainer(run, steps=6, save_every=3)
        tr.fit()  # resumes at step 3
        return {"losses": [json.loads(l)["loss"] for l in (run/"metrics.jsonl").read_text().splitlines()],
                "final": {n: p.detach().clone() for n, p in tr.unwrapped.named_parameters()}}

    def results_table():
        from moe_nb.select_moe.experiment import eval_rows, summarize
        rows = [json.loads(l) for l in (root/"results_table"/"results.jsonl").read_text().splitlines()]
        return {"rows": rows, "summary": summarize(rows), "again": eval_rows(root/"results_table"/"runs")}

    readers = {"select_moe_model": select_moe_model, "router_full_rank": lambda: router("full_rank"),
               "router_lora": lambda: router("lora"), "router_data": router_data, "selection": selection, "adapter": adapter,
               "token_shards": token_shards, "teacher_shards": teacher_shards, "router_stats": router_stats,
               "nexus_model": nexus_model, "parscale_model": parscale_model, "polychromatic_model": polychromatic_model,
               "engine_checkpoint": engine_checkpoint, "results_table": results_table}
    for name in NAMES:
        try: out[name] = readers[name]()
        except Exception: out[name] = {"error": traceback.format_exc()}
    return out

if __name__ == "__main__":
    root = Path(sys.argv[1])
    torch.save(read(root), root/"read.pt")
