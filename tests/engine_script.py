"A tiny training run through moe_nb.engine, for tests that need real processes (kill/resume, torchrun DDP)."
import argparse, time
from pathlib import Path
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from moe_nb.core import save_tensors
from moe_nb.engine import Trainer, TrainConfig
from moe_nb.hooks import Hook

ap = argparse.ArgumentParser()
ap.add_argument("run_dir"); ap.add_argument("--steps", type=int, default=30); ap.add_argument("--batch-size", type=int, default=8)
ap.add_argument("--grad-accum", type=int, default=1); ap.add_argument("--save-every", type=int, default=0)
ap.add_argument("--sleep", type=float, default=0.0)
ap.add_argument("--dropout", type=float, default=0.1)  # on by default, so that resuming must restore the RNG
a = ap.parse_args()

class Slow(Hook):
    def on_step_end(self, trainer, step, logs): time.sleep(a.sleep)

torch.manual_seed(0)
data = torch.randint(0, 64, (64, 24))
cfg_m = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=32, attention_dropout=a.dropout)
model = Qwen2ForCausalLM(cfg_m)
cfg = TrainConfig(steps=a.steps, batch_size=a.batch_size, grad_accum=a.grad_accum, lr=3e-3, warmup_steps=5, log_every=1,
                  save_every=a.save_every, tracker="none", progress=False, cpu=True, seed=1)
tr = Trainer(model, cfg, data, run_dir=a.run_dir, hooks=[Slow()])
tr.fit()
save_tensors({n: p for n, p in tr.unwrapped.named_parameters()}, Path(a.run_dir)/f"final-{tr.acc.process_index}.safetensors")
