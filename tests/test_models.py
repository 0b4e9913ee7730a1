"""The registered model classes (Select-MoE on OLMoE, NEXUS on GPT-OSS, ParScale on Qwen2) tested as transformers tests
its own models: save/load with buffers and config, the Auto classes, generation (greedy, sampling, beam search, with and
without cache), left padding and batch equivalence, attention masks, extra outputs, gradient checkpointing, resized
embeddings, dtypes, torch.compile, experts and attention implementations. Tiny configs of shapes the zoo does not use:
head_dim not equal to hidden / heads, sliding-window layers, experts not a power of two, three streams."""
import json, subprocess, sys
import pytest, torch
from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, GptOssConfig, GptOssForCausalLM, OlmoeConfig,
                          OlmoeForCausalLM, Qwen2Config, Qwen2ForCausalLM)
from moe_nb.select_moe.model import convert_olmoe_to_select_moe, SelectMoeForCausalLM, SelectMoeModel
from moe_nb.nexus.model import add_shared_experts, GptOssNexusForCausalLM, GptOssNexusModel
from moe_nb.parscale.model import convert_to_parscale_model, Qwen2ParScaleForCausalLM, Qwen2ParScaleModel, ParScaleCache

V, PAD, EOS = 97, 0, 1

def olmoe_cfg():
    return OlmoeConfig(vocab_size=V, hidden_size=40, intermediate_size=24, num_hidden_layers=3, num_attention_heads=4,
                       num_key_value_heads=2, num_experts=6, num_experts_per_tok=2, max_position_embeddings=64,
                       pad_token_id=PAD, eos_token_id=EOS, bos_token_id=None)

def gpt_oss_cfg():
    return GptOssConfig(vocab_size=V, hidden_size=48, intermediate_size=40, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=10, num_local_experts=6, num_experts_per_tok=2, sliding_window=5,
                        layer_types=["sliding_attention", "full_attention"] * 2, max_position_embeddings=64,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, pad_token_id=PAD, eos_token_id=EOS,
                        bos_token_id=None)

def qwen2_cfg():
    return Qwen2Config(vocab_size=V, hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=10, use_sliding_window=True, sliding_window=5, max_window_layers=1,
                       max_position_embeddings=64, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=None, tie_word_embeddings=False)

def select_moe():
    torch.manual_seed(0)
    return convert_olmoe_to_select_moe(OlmoeForCausalLM(olmoe_cfg()), quality_gate_init_std=0.3).eval()

def nexus():
    torch.manual_seed(0)
    return add_shared_experts(GptOssForCausalLM(gpt_oss_cfg()), "random", scale=0.3, std=0.05).eval()

def parscale():
    torch.manual_seed(0)
    return convert_to_parscale_model(Qwen2ForCausalLM(qwen2_cfg()), P=3, n_tokens=5).eval()

MODELS = {"select_moe": select_moe, "nexus": nexus, "parscale": parscale}
CLASSES = {"select_moe": (SelectMoeForCausalLM, SelectMoeModel), "nexus": (GptOssNexusForCausalLM, GptOssNexusModel),
           "parscale": (Qwen2ParScaleForCausalLM, Qwen2ParScaleModel)}
# attention implementations the stock base model runs on the CPU (GPT-OSS has sinks: no SDPA); ParScale declares flex unsupported
ATTN = {"select_moe": ["eager", "sdpa"], "nexus": ["eager"], "parscale": ["eager", "sdpa"]}  # GPT-OSS flex: sinks need CUDA

@pytest.fixture(scope="module", params=list(MODELS))
def case(request):
    return request.param, MODELS[request.param]()

def ids(b=2, t=9, seed=1):
    return torch.randint(2, V, (b, t), generator=torch.Generator().manual_seed(seed))

def logits(m, x, **kw):
    with torch.no_grad(): return m(input_ids=x, **kw).logits

def test_main_input_name_and_forward_signature(case):
    import inspect
    name, m = case
    for cls in CLASSES[name]:
        params = list(inspect.signature(cls.forward).parameters)
        assert params[1] == cls.main_input_name == "input_ids", (cls, params[:3])
        assert "attention_mask" in params

def test_save_load_buffers_and_config(case, tmp_path):
    name, m = case
    x = ids()
    m.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path/"config.json").read_text())
    assert "auto_map" not in cfg and cfg["model_type"] == m.config.model_type
    back = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=False).eval()
    assert type(back) is type(m)
    torch.testing.assert_close(logits(back, x), logits(m, x), rtol=0, atol=0)
    mine, theirs = dict(m.named_buffers()), dict(back.named_buffers())
    assert set(mine) == set(theirs)
    for k in mine: torch.testing.assert_close(theirs[k], mine[k], rtol=0, atol=0, msg=k)  # non-persistent ones included
    skip = {"transformers_version", "_name_or_path", "dtype"}
    a, b = m.config.to_dict(), back.config.to_dict()
    assert {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert type(base) is CLASSES[name][1]
    with torch.no_grad(): torch.testing.assert_close(base(input_ids=x).last_hidden_state, m.model(input_ids=x).last_hidden_state)

def test_auto_classes_from_config(case):
    name, m = case
    cfg = AutoConfig.for_model(m.config.model_type, **{k: v for k, v in m.config.to_dict().items() if k != "model_type"})
    assert type(AutoModelForCausalLM.from_config(cfg)) is CLASSES[name][0]
    assert type(AutoModel.from_config(cfg)) is CLASSES[name][1]

def test_fresh_process_from_pretrained(tmp_path):
    "Every class reloaded by a new Python process, which imports nothing but the module that registers it."
    x = ids()
    ref = {}
    for name, make in MODELS.items():
        m = make(); m.save_pretrained(tmp_path/name); ref[name] = logits(m, x)
    torch.save(x, tmp_path/"x.pt")
    script = """
import sys, torch
from pathlib import Path
import moe_nb.select_moe.model, moe_nb.nexus.model, moe_nb.parscale.model
from transformers import AutoModelForCausalLM
d = Path(sys.argv[1]); x = torch.load(d/"x.pt", weights_only=True); out = {}
for name in ("select_moe", "nexus", "parscale"):
    m = AutoModelForCausalLM.from_pretrained(d/name).eval()
    with torch.no_grad(): out[name] = m(input_ids=x).logits
    out[name + ".buffers"] = {k: b.clone() for k, b in m.named_buffers()}
torch.save(out, d/"out.pt")
"""
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = torch.load(tmp_path/"out.pt", weights_only=True)
    for name, make in MODELS.items():
        torch.testing.assert_close(out[name], ref[name], rtol=0, atol=0, msg=name)
        for k, b in make().named_buffers(): torch.testing.assert_close(out[name + ".buffers"][k], b, rtol=0, atol=0, msg=f"{name} {k}")

def gen(m, x, **kw):
    return m.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=6, pad_token_id=PAD, **kw)

def test_generate_greedy_sample_beam_with_and_without_cache(case):
    name, m = case
    x = ids(2, 7)
    g = gen(m, x, do_sample=False)
    torch.testing.assert_close(g, gen(m, x, do_sample=False, use_cache=False))
    full = logits(m, g)  # greedy picks the arg max of full recomputation, step by step
    assert torch.equal(full[:, 6:-1].argmax(-1), g[:, 7:])
    torch.manual_seed(3); s1 = gen(m, x, do_sample=True, top_k=5)
    torch.manual_seed(3); s2 = gen(m, x, do_sample=True, top_k=5, use_cache=False)
    torch.testing.assert_close(s1, s2)
    b = gen(m, x, num_beams=3, do_sample=False)
    torch.testing.assert_close(b, gen(m, x, num_beams=3, do_sample=False, use_cache=False))

def test_cache_steps_equal_full_forward(case):
    name, m = case
    x = ids(2, 11)
    with torch.no_grad():
        o = m(input_ids=x[:, :6], use_cache=True)
        steps, pkv = [o.logits], o.past_key_values
        for t in range(6, 11):
            o = m(input_ids=x[:, t:t + 1], past_key_values=pkv, use_cache=True); steps.append(o.logits); pkv = o.past_key_values
    torch.testing.assert_close(torch.cat(steps, 1), logits(m, x, use_cache=False), rtol=1e-4, atol=1e-4)

def test_left_padding_and_batch_equivalence(case):
    name, m = case
    a, b = ids(1, 5, seed=2), ids(1, 9, seed=3)
    batch = torch.cat([torch.cat([torch.full((1, 4), PAD), a], 1), b]); am = torch.ones_like(batch); am[0, :4] = 0
    with torch.no_grad():
        out = m(input_ids=batch, attention_mask=am).logits
        torch.testing.assert_close(out[0, 4:], logits(m, a)[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(out[1], logits(m, b)[0], rtol=1e-4, atol=1e-4)
    g = m.generate(input_ids=batch, attention_mask=am, max_new_tokens=6, do_sample=False, pad_token_id=PAD)[:, 9:]
    until_eos = lambda t: t.tolist()[:t.tolist().index(EOS) + 1] if EOS in t.tolist() else t.tolist()
    assert until_eos(g[0]) == until_eos(gen(m, a, do_sample=False)[0, 5:])
    assert until_eos(g[1]) == until_eos(gen(m, b, do_sample=False)[0, 9:])
    x = ids(4, 8)  # batch equivalence: each row alone gives what it gives in the batch
    full = logits(m, x)
    for i in range(4): torch.testing.assert_close(logits(m, x[i:i + 1])[0], full[i], rtol=1e-5, atol=1e-5)

def test_attention_mask_hides_padding(case):
    name, m = case
    x = ids(2, 10); am = torch.ones_like(x); am[:, 7:] = 0
    y = x.clone(); y[:, 7:] = ids(2, 3, seed=9)  # other tokens where the mask is 0
    torch.testing.assert_close(logits(m, x, attention_mask=am)[:, :7], logits(m, y, attention_mask=am)[:, :7])

def test_hidden_states_attentions_router_logits(case):
    name, m = case
    x = ids(2, 8)
    L, P = m.config.num_hidden_layers, getattr(m.config, "parscale_n", 1)
    m.set_attn_implementation("eager")
    try:
        with torch.no_grad(): o = m(input_ids=x, output_hidden_states=True, output_attentions=True)
    finally: m.set_attn_implementation("sdpa" if name != "nexus" else "eager")
    n = getattr(m.config, "parscale_n_tokens", 0) if P > 1 else 0
    assert len(o.hidden_states) == L + 1 and all(h.shape == (P * 2, 8, m.config.hidden_size) for h in o.hidden_states)  # P streams
    assert len(o.attentions) == L and all(a.shape == (P * 2, m.config.num_attention_heads, 8, n + 8) for a in o.attentions)
    if name == "select_moe":
        r = m(input_ids=x, output_router_logits=True).router_logits
        assert len(r) == L and r[0]["quality_score"].shape == (2, 8, 1) and r[0]["moe_logits"].shape == (16, 6)
    if name == "nexus":
        with torch.no_grad(): r = m(input_ids=x, output_router_logits=True).router_logits
        assert len(r) == L and r[0].shape == (16, 6)

def test_gradient_checkpointing_same_gradients(case):
    name, m = case
    m = MODELS[name]().train()
    x = ids(2, 8)
    def grads():
        m.zero_grad(); m(input_ids=x, labels=x).loss.backward()
        return {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}
    ref = grads()
    m.activation_checkpointing_enable()
    got = grads()
    assert set(got) == set(ref) and len(ref) > 0
    for k in ref: torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-6, msg=k)

def test_resize_token_embeddings(case):
    name, m = case
    m = MODELS[name]()
    x = ids(2, 6)
    before = logits(m, x)
    m.resize_token_embeddings(V + 5)
    after = logits(m, x)
    assert after.shape[-1] == V + 5 and m.config.vocab_size == V + 5
    torch.testing.assert_close(after[..., :V], before, rtol=1e-5, atol=1e-5)  # the old tokens' logits do not move

def test_dtype_casting(case, tmp_path):
    name, m = case
    x = ids(2, 6)
    ref = logits(m, x)
    m.save_pretrained(tmp_path)
    half = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    out = logits(half, x).float()
    assert torch.isfinite(out).all()
    assert (out - ref).abs().mean() < 0.05 * ref.abs().mean() + 0.05
    back = MODELS[name]().to(torch.float64)
    if name != "parscale": back.set_experts_implementation("eager")  # torch._grouped_mm takes float32 and half types only
    torch.testing.assert_close(logits(back, x).float(), ref, rtol=1e-4, atol=1e-4)

@pytest.mark.parametrize("name", ["select_moe", "nexus"])
def test_compile_fullgraph(name):
    "The stock OLMoE and GPT-OSS compile with fullgraph (dynamo capture, eager backend): so must our wrappers."
    m = MODELS[name]()
    assert m._can_compile_fullgraph
    x = ids(2, 8)
    c = torch.compile(m, fullgraph=True, backend="eager")
    with torch.no_grad(): torch.testing.assert_close(c(input_ids=x).logits, logits(m, x), rtol=1e-5, atol=1e-5)

def test_parscale_declares_what_it_supports():
    m = MODELS["parscale"]()
    assert not m._can_compile_fullgraph and not m._supports_flex_attn and not m._supports_flash_attn
    with pytest.raises(ValueError, match="not cache_implementation='static'"):
        m.generate(input_ids=ids(1, 4), max_new_tokens=2, cache_implementation="static", pad_token_id=PAD)
    out = m.model(input_ids=ids(1, 4), return_dict=False)
    assert isinstance(out, tuple) and out[0].shape == (1, 4, 48)

@pytest.mark.parametrize("name", ["select_moe", "nexus"])
def test_experts_implementations_agree(name):
    "The wrappers declare that they can switch experts_implementation; every kernel gives the eager loop's output."
    m = MODELS[name]()
    assert type(m)._can_set_experts_implementation()
    x = ids(2, 8)
    m.set_experts_implementation("eager"); ref = logits(m, x)
    for impl in ("grouped_mm", "batched_mm"):
        m.set_experts_implementation(impl)
        assert all(e.config._experts_implementation == impl for e in m.modules() if type(e).__name__.endswith("Experts"))
        torch.testing.assert_close(logits(m, x), ref, rtol=1e-5, atol=1e-5, msg=impl)

def test_attention_implementations_agree(case):
    name, m = case
    x = ids(2, 9); am = torch.ones_like(x); am[0, :3] = 0
    outs = {}
    for impl in ATTN[name]:
        m.set_attn_implementation(impl); outs[impl] = logits(m, x, attention_mask=am)
    m.set_attn_implementation(ATTN[name][-1])
    first = outs[ATTN[name][0]]
    for impl, o in outs.items(): torch.testing.assert_close(o[:, 3:], first[:, 3:], rtol=1e-4, atol=1e-4, msg=impl)
    for impl, ok in {"sdpa": type(m)._supports_sdpa, "flex_attention": type(m)._supports_flex_attn}.items():
        if not ok:  # what the class declares unsupported, it refuses when asked
            with pytest.raises(ValueError): m.set_attn_implementation(impl)

def test_select_moe_4d_mask_and_static_cache():
    m = MODELS["select_moe"]()
    x = ids(2, 7)
    causal = torch.tril(torch.ones(7, 7, dtype=torch.bool))[None, None].expand(2, 1, 7, 7)
    torch.testing.assert_close(logits(m, x, attention_mask=causal), logits(m, x))
    out = m(input_ids=x, attention_mask=causal, labels=x)  # a 4-D mask: the quality loss counts every token
    assert torch.isfinite(out.loss) and out.quality_loss is not None
    torch.testing.assert_close(gen(m, x, do_sample=False, cache_implementation="static"), gen(m, x, do_sample=False))

def test_parscale_sliding_window_and_packed_masks_equal_stock():
    "The mask over real tokens is the one stock Qwen2 builds, layer type by layer type; the prefix columns are all visible."
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
    m = MODELS["parscale"]()
    core, T = m.model, 9
    pos = torch.cat([torch.arange(4), torch.arange(5)])[None].expand(2, T)
    emb = torch.zeros(2, T, 48)
    masks = core.stream_masks(None, pos, 2, T, 0, torch.float32, "cpu")
    ref = {"full_attention": create_causal_mask(core.config, emb, None, None, pos, allow_is_causal_skip=False),
           "sliding_attention": create_sliding_window_causal_mask(core.config, emb, None, None, pos, allow_is_causal_skip=False)}
    n = m.config.parscale_n_tokens
    for kind in ("full_attention", "sliding_attention"):
        mk = masks[kind]
        assert mk.shape == (3 * 2, 1, T, n + T) and mk[..., :n].all()
        torch.testing.assert_close(mk[:2, ..., n:], ref[kind])
    x = ids(2, T)
    with torch.no_grad():  # the second packed document alone gives the same logits: it never saw the first
        torch.testing.assert_close(m(input_ids=x, position_ids=pos).logits[:, 4:], logits(m, x[:, 4:]), rtol=1e-5, atol=1e-5)
    long = ids(1, 20)  # sliding layers in generation: the cache keeps everything, the mask keeps the window
    torch.testing.assert_close(gen(m, long, do_sample=False), gen(m, long, do_sample=False, use_cache=False))

def test_parscale_training_cache_is_read_only():
    m = MODELS["parscale"]()
    x = ids(2, 6)
    out = m(input_ids=x, use_cache=False)
    assert out.past_key_values is None
    c = m.model.new_cache(store=False)
    with torch.no_grad(): m(input_ids=x, past_key_values=c, use_cache=True)
    assert c.get_seq_length() == 0 and isinstance(c, ParScaleCache)
