"""What only a CUDA device can check (skipped elsewhere; bench/gpu.sh runs them): the model on the GPU
against transformers on the GPU in fp32 and fp16, training attention through SDPA's fused kernel with
dropout, and mixed-precision training steps (fp16 with loss scaling, bf16) that stay close to fp32."""

from __future__ import annotations

import pytest
import torch
from test_model import batch, hf_pair

from bertkit import model as M
from bertkit.train.loop import autocast

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_model_on_the_gpu_matches_transformers_in_fp32_and_fp16():
    hf, ours, _ = hf_pair(M.BertModel, __import__("transformers").BertModel, {})
    ids, mask, types = (t.cuda() for t in batch(seed=3))
    for dtype, tol in ((torch.float32, 1e-4), (torch.float16, 2e-2)):
        hf.to("cuda", dtype)
        ours.to("cuda", dtype)
        with torch.no_grad():
            a = ours(ids, mask, types).last_hidden_state
            b = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        real = mask.bool()
        assert (a[real] - b[real]).abs().max().item() <= tol, dtype


def test_fused_training_attention_drops_and_rescales_on_the_gpu():
    model = (
        M.BertModel(
            M.BertConfig(
                vocab_size=101,
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=64,
            )
        )
        .cuda()
        .train()
    )
    ids, mask, types = (t.cuda() for t in batch(seed=4))
    torch.manual_seed(0)
    a = model(ids, mask, types).last_hidden_state
    b = model(ids, mask, types).last_hidden_state
    assert not torch.equal(a, b)  # dropout is on in training
    model.eval()
    with torch.no_grad():
        c, d = (model(ids, mask, types).last_hidden_state for _ in range(2))
    assert torch.equal(c, d) and torch.isfinite(a).all()


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_steps_stay_close_to_fp32(precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    losses = {}
    for p in ("fp32", precision):
        torch.manual_seed(0)
        model = M.BertForSequenceClassification(
            M.BertConfig(
                vocab_size=101, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
            ),
            2,
        ).cuda()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler(enabled=p == "fp16")
        ids, mask, types = (t.cuda() for t in batch(seed=5))
        y = torch.tensor([0, 1, 0, 1], device="cuda")
        for _ in range(20):
            with autocast(p, torch.device("cuda")):
                loss = torch.nn.functional.cross_entropy(model(ids, mask, types).float(), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
        losses[p] = loss.item()
    assert abs(losses["fp32"] - losses[precision]) <= 0.05 + 0.1 * losses["fp32"], losses
