"""Run by tests/test_convert.py with a Python that has TensorFlow (.venv-tf): checkpoints in
google-research/bert's variable layout written and read by TensorFlow itself, and BERT's forward pass
in TensorFlow ops, after modeling.py's `embedding_postprocessor`, `transformer_model` and pooler and
run_pretraining.py's heads.

  python tf_bert.py write PREFIX CONFIG.json INPUTS.npz OUT.npz   random weights (+ Adam slots and
                                                                  global_step) saved by tf.compat.v1.train.Saver
  python tf_bert.py read PREFIX CONFIG.json INPUTS.npz OUT.npz    a checkpoint loaded by tf.train.load_checkpoint

Both run the model on INPUTS (input_ids, token_type_ids, attention_mask) and save its outputs to OUT.
`gelu` is the exact (erf) form, as in Hugging Face and bertkit; modeling.py's tanh approximation is
what those call `gelu_new`.
"""

import json
import sys

import numpy as np
import tensorflow as tf


def names(cfg):
    """Variable name -> shape, as modeling.py and run_pretraining.py create them."""
    H, F, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]  # F: feed-forward size
    shapes = {
        "bert/embeddings/word_embeddings": [V, H],
        "bert/embeddings/token_type_embeddings": [cfg["type_vocab_size"], H],
        "bert/embeddings/position_embeddings": [cfg["max_position_embeddings"], H],
    }

    def dense(scope, n_in, n_out):
        shapes.update({f"{scope}/kernel": [n_in, n_out], f"{scope}/bias": [n_out]})

    def norm(scope):
        shapes.update({f"{scope}/gamma": [H], f"{scope}/beta": [H]})

    norm("bert/embeddings/LayerNorm")
    for i in range(cfg["num_hidden_layers"]):
        s = f"bert/encoder/layer_{i}"
        for part in ("query", "key", "value"):
            dense(f"{s}/attention/self/{part}", H, H)
        dense(f"{s}/attention/output/dense", H, H)
        norm(f"{s}/attention/output/LayerNorm")
        dense(f"{s}/intermediate/dense", H, F)
        dense(f"{s}/output/dense", F, H)
        norm(f"{s}/output/LayerNorm")
    dense("bert/pooler/dense", H, H)
    dense("cls/predictions/transform/dense", H, H)
    shapes.update(
        {
            "cls/predictions/transform/LayerNorm/gamma": [H],
            "cls/predictions/transform/LayerNorm/beta": [H],
            "cls/predictions/output_bias": [V],
            "cls/seq_relationship/output_weights": [2, H],
            "cls/seq_relationship/output_bias": [2],
        }
    )
    return shapes


def layer_norm(x, w, scope, eps):
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + eps) * w[f"{scope}/gamma"] + w[f"{scope}/beta"]


def forward(w, cfg, ids, types, mask):
    act = {
        "gelu": lambda t: tf.nn.gelu(t, approximate=False),
        "gelu_new": lambda t: tf.nn.gelu(t, approximate=True),
        "relu": tf.nn.relu,
    }[cfg["hidden_act"]]
    eps = cfg.get("layer_norm_eps", 1e-12)
    B, T = ids.shape
    H, N = cfg["hidden_size"], cfg["num_attention_heads"]
    d = H // N

    def dense(x, scope):
        return tf.matmul(x, w[f"{scope}/kernel"]) + w[f"{scope}/bias"]

    x = (
        tf.gather(w["bert/embeddings/word_embeddings"], ids)
        + tf.gather(w["bert/embeddings/token_type_embeddings"], types)
        + w["bert/embeddings/position_embeddings"][:T]
    )
    x = layer_norm(x, w, "bert/embeddings/LayerNorm", eps)
    adder = (1.0 - tf.cast(mask, tf.float32))[:, None, None, :] * -10000.0

    def heads(t):  # [B, T, H] -> [B, N, T, d]
        return tf.transpose(tf.reshape(t, [B, T, N, d]), [0, 2, 1, 3])

    for i in range(cfg["num_hidden_layers"]):
        s = f"bert/encoder/layer_{i}"
        q, k, v = (heads(dense(x, f"{s}/attention/self/{p}")) for p in ("query", "key", "value"))
        scores = tf.matmul(q, k, transpose_b=True) / np.sqrt(d) + adder
        ctx = tf.reshape(tf.transpose(tf.matmul(tf.nn.softmax(scores), v), [0, 2, 1, 3]), [B, T, H])
        x = layer_norm(dense(ctx, f"{s}/attention/output/dense") + x, w, f"{s}/attention/output/LayerNorm", eps)
        h = dense(act(dense(x, f"{s}/intermediate/dense")), f"{s}/output/dense")
        x = layer_norm(h + x, w, f"{s}/output/LayerNorm", eps)
    pooled = tf.tanh(dense(x[:, 0], "bert/pooler/dense"))
    t = layer_norm(act(dense(x, "cls/predictions/transform/dense")), w, "cls/predictions/transform/LayerNorm", eps)
    mlm = tf.matmul(t, w["bert/embeddings/word_embeddings"], transpose_b=True) + w["cls/predictions/output_bias"]
    nsp = (
        tf.matmul(pooled, w["cls/seq_relationship/output_weights"], transpose_b=True)
        + w["cls/seq_relationship/output_bias"]
    )
    return {"sequence": x, "pooled": pooled, "mlm": mlm, "nsp": nsp}


def main(mode, prefix, config_file, inputs_file, out_file):
    cfg = json.load(open(config_file))
    inputs = np.load(inputs_file)
    if mode == "write":
        rng = np.random.default_rng(0)
        w = {}
        for name, shape in names(cfg).items():
            base = 1.0 if name.endswith("gamma") else 0.0
            w[name] = (base + rng.normal(0, 0.02 if base == 0 else 0.1, shape)).astype(np.float32)
        variables = {n: tf.Variable(v, name=n.replace("/", "_")) for n, v in w.items()}
        # What AdamWeightDecayOptimizer leaves in every google-research/bert checkpoint.
        for n, v in w.items():
            variables[f"{n}/adam_m"] = tf.Variable(np.zeros_like(v))
            variables[f"{n}/adam_v"] = tf.Variable(np.full_like(v, 1e-4))
        variables["global_step"] = tf.Variable(np.int64(1000))
        tf.compat.v1.train.Saver(var_list=variables).save(None, prefix)
    else:
        reader = tf.train.load_checkpoint(prefix)
        w = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
        missing = sorted(set(names(cfg)) - set(w))
        assert not missing, f"missing in the checkpoint: {missing}"
    w = {n: tf.constant(v) for n, v in w.items()}
    out = forward(w, cfg, inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])
    np.savez(out_file, **{k: v.numpy() for k, v in out.items()})


if __name__ == "__main__":
    main(*sys.argv[1:])
