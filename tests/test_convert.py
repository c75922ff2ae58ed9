"""bertkit convert: TensorFlow tensor bundles read and written without TensorFlow, Google's variable
names, and parity with transformers and with TensorFlow itself (the `tensorflow` tests, run with the
separate .venv-tf that `make test` installs)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from bertkit.cli.main import main as cli
from bertkit.convert.bundle import masked_crc32c, read_bundle, write_bundle
from bertkit.convert.google import hf_to_tf, tf_to_hf
from bertkit.convert.tf import from_tf, reference_forward, to_tf
from bertkit.errors import BertkitError
from bertkit.model import BertConfig

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    hidden_act="gelu",
)


def write_vocab(path: Path, size: int = 99) -> Path:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    path.write_text("\n".join(specials + [f"w{i}" for i in range(size - len(specials))]) + "\n")
    return path


def inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 99, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


@pytest.fixture(scope="module")
def hf_pretraining_dir(tmp_path_factory):
    """transformers' BertForPreTraining, random weights (LayerNorms and biases too), saved by transformers."""
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(transformers.BertConfig(**TINY)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    d = tmp_path_factory.mktemp("hf")
    model.save_pretrained(d)
    write_vocab(d / "vocab.txt")
    return d, model


def test_crc32c_worked_examples():
    import google_crc32c

    assert google_crc32c.value(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert masked_crc32c(b"") == 0xA282EAD8  # LevelDB's mask of crc 0: rotate 15, add the delta


def test_bundle_round_trip_keeps_every_dtype_shape_and_value(tmp_path):
    tensors = {
        "b/float": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
        "a/half": np.ones(5, np.float16),
        "global_step": np.array(1000, np.int64),
        "c/ids": np.array([[1, -2]], np.int32),
        "d/empty": np.zeros((0, 3), np.float32),
        "e/double": np.array([np.pi]),
    }
    write_bundle(tensors, tmp_path / "model.ckpt")
    back = read_bundle(tmp_path)  # the directory: found through the `checkpoint` file
    assert sorted(back) == sorted(tensors)
    for name, array in tensors.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        np.testing.assert_array_equal(back[name], array)


def test_key_table_transposes_kernels_and_skips_optimizer_state(hf_pretraining_dir):
    _, model = hf_pretraining_dir
    hf = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    tf_state, unknown = to_tf(hf)
    assert unknown == []
    q = hf["bert.encoder.layer.1.attention.self.query.weight"]
    np.testing.assert_array_equal(tf_state["bert/encoder/layer_1/attention/self/query/kernel"], q.T)
    np.testing.assert_array_equal(
        tf_state["bert/encoder/layer_1/output/LayerNorm/gamma"], hf["bert.encoder.layer.1.output.LayerNorm.weight"]
    )
    np.testing.assert_array_equal(tf_state["cls/seq_relationship/output_weights"], hf["cls.seq_relationship.weight"])
    assert "cls/predictions/decoder" not in str(sorted(tf_state))  # tied to the word embeddings
    # 5 embedding tensors, 16 per layer, pooler 2, MLM transform 4 + bias, NSP 2
    assert len(tf_state) == 5 + 16 * 2 + 2 + 5 + 2
    slots = {f"{k}/adam_m": v for k, v in tf_state.items()} | {"global_step": np.array(3)}
    back, skipped, unknown = from_tf({**tf_state, **slots, "some/other_var": np.zeros(1)})
    assert len(skipped) == len(slots) and unknown == ["some/other_var"]
    for name, array in back.items():
        expected = hf["cls.predictions.decoder.bias"] if name == "cls.predictions.bias" else hf[name]
        np.testing.assert_array_equal(array, expected)


def test_reference_forward_matches_transformers(hf_pretraining_dir):
    """The parity check's float64 reference is itself right: transformers' BertModel on the same weights."""
    _, model = hf_pretraining_dir
    tf_state, _ = to_tf({k: v.detach().numpy() for k, v in model.state_dict().items()})
    x = inputs()
    seq, pooled = reference_forward(
        tf_state, BertConfig(**TINY), x["input_ids"], x["token_type_ids"], x["attention_mask"]
    )
    with torch.no_grad():
        theirs = model.bert(**x)
    keep = x["attention_mask"].bool()
    assert (seq.float() - theirs.last_hidden_state)[keep].abs().max() < 1e-5
    assert (pooled.float() - theirs.pooler_output).abs().max() < 1e-5


def test_hf_to_tf_to_hf_is_exact_and_transformers_loads_it(hf_pretraining_dir, tmp_path, capsys):
    src, model = hf_pretraining_dir
    assert cli(["convert", "--input", str(src), "--output", str(tmp_path / "tf")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tensors"] == 46 and report["parity"]["sequence_max_abs_diff"] < 1e-5
    assert sorted(p.name for p in (tmp_path / "tf").iterdir()) == [
        "bert_config.json",
        "bert_model.ckpt.data-00000-of-00001",
        "bert_model.ckpt.index",
        "checkpoint",
        "vocab.txt",
    ]
    assert cli(["convert", "--input", str(tmp_path / "tf"), "--output", str(tmp_path / "hf")]) == 0
    assert json.loads(capsys.readouterr().out)["parity"]["pooled_max_abs_diff"] < 1e-5
    back, info = transformers.BertForPreTraining.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        a, b = model(**inputs()), back.eval()(**inputs())
    assert torch.equal(a.prediction_logits, b.prediction_logits)
    assert torch.equal(a.seq_relationship_logits, b.seq_relationship_logits)


def test_minilm_converts_both_ways_with_parity(minilm_dir, tmp_path):
    report = hf_to_tf(minilm_dir, tmp_path / "tf")
    assert report["tensors"] == 103 and report["not_converted"] == []  # 5 embedding tensors + 6 layers x 16 + pooler 2
    assert report["parity"]["sequence_max_abs_diff"] < 1e-4
    report = tf_to_hf(tmp_path / "tf" / "bert_model.ckpt", tmp_path / "hf")
    assert report["parity"]["inputs"] == 10 and report["parity"]["pooled_max_abs_diff"] < 1e-4
    from bertkit.encode.encoder import Encoder

    vec = Encoder(tmp_path / "hf", pooling="mean", normalize=True).encode(["This is an example sentence"])[0]
    assert vec[:2] == pytest.approx([0.0677, 0.0635], abs=1e-4)


def test_corrupt_and_incomplete_checkpoints_are_named(hf_pretraining_dir, tmp_path):
    src, _ = hf_pretraining_dir
    hf_to_tf(src, tmp_path / "tf")
    prefix = tmp_path / "tf" / "bert_model.ckpt"
    data = Path(f"{prefix}.data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF  # inside the first tensor
    data.write_bytes(bytes(raw))
    with pytest.raises(BertkitError, match=r"checksum mismatch for `bert/embeddings/LayerNorm/beta`.*corrupt"):
        read_bundle(prefix)
    index = Path(f"{prefix}.index")
    raw = bytearray(index.read_bytes())
    raw[10] ^= 0xFF
    index.write_bytes(bytes(raw))
    with pytest.raises(BertkitError, match="block checksum mismatch at byte 0"):
        read_bundle(prefix)
    index.write_bytes(bytes(raw[:-20]))
    with pytest.raises(BertkitError, match="not a TensorFlow checkpoint index"):
        read_bundle(prefix)
    data.unlink()
    (tmp_path / "tf" / "bert_config.json").unlink()
    with pytest.raises(BertkitError, match="has no bert_config.json or config.json: pass --config"):
        tf_to_hf(prefix, tmp_path / "out")
    (tmp_path / "two").mkdir()
    for name in ("a.ckpt.index", "b.ckpt.index"):
        (tmp_path / "two" / name).write_bytes(b"")
    with pytest.raises(BertkitError, match="expected one TensorFlow checkpoint.*a.ckpt.index, b.ckpt.index"):
        read_bundle(tmp_path / "two")
    with pytest.raises(BertkitError, match="nothing.ckpt.index not found"):
        read_bundle(tmp_path / "nothing.ckpt")


def test_convert_direction_errors(hf_pretraining_dir, tmp_path, capsys):
    src, _ = hf_pretraining_dir
    assert cli(["convert", "--input", str(src), "--output", str(tmp_path / "x"), "--to", "hf"]) == 2
    assert "is not a TensorFlow checkpoint (no .index file)" in capsys.readouterr().err


# ---- against TensorFlow itself ----


@pytest.fixture(scope="module")
def tf_python():
    """The Python of .venv-tf (TensorFlow CPU, installed by `make tf-env`), or BERTKIT_TF_PYTHON."""
    python = Path(os.environ.get("BERTKIT_TF_PYTHON", ROOT / ".venv-tf" / "bin" / "python"))
    if not python.is_file():
        msg = f"no TensorFlow environment at {python}: run `make tf-env` (pip install tensorflow-cpu)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return python


def run_tf(python: Path, mode: str, prefix: Path, config: Path, tmp_path: Path) -> dict[str, np.ndarray]:
    np.savez(tmp_path / "inputs.npz", **{k: v.numpy() for k, v in inputs().items()})
    out = tmp_path / f"tf-{mode}.npz"
    done = subprocess.run(
        [
            str(python),
            str(ROOT / "tests" / "tf_bert.py"),
            mode,
            str(prefix),
            str(config),
            str(tmp_path / "inputs.npz"),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(np.load(out))


def bertkit_outputs(model_dir: Path) -> dict[str, np.ndarray]:
    from bertkit.checkpoint import load_model
    from bertkit.model import BertForPreTraining

    model = load_model(model_dir, BertForPreTraining)
    with torch.no_grad():
        x = inputs()
        out = model.bert(x["input_ids"], x["attention_mask"], x["token_type_ids"])
        mlm, nsp = model(x["input_ids"], x["attention_mask"], x["token_type_ids"])
    return {
        "sequence": out.last_hidden_state.numpy(),
        "pooled": out.pooler_output.numpy(),
        "mlm": mlm.numpy(),
        "nsp": nsp.numpy(),
    }


def assert_close(ours: dict, theirs: dict, atol: float = 1e-5):
    keep = inputs()["attention_mask"].bool().numpy()
    for key in ("sequence", "pooled", "mlm", "nsp"):
        a, b = ours[key], theirs[key]
        if key in ("sequence", "mlm"):
            a, b = a[keep], b[keep]
        assert np.abs(a - b).max() < atol, f"{key}: {np.abs(a - b).max():.2e}"


@pytest.mark.tensorflow
def test_tensorflow_written_checkpoint_converts_with_parity(tf_python, tmp_path):
    """TensorFlow's own Saver writes google-research/bert's layout (with Adam slots and global_step);
    bertkit converts it without TensorFlow and reproduces TensorFlow's outputs."""
    (tmp_path / "tf").mkdir()
    config = tmp_path / "tf" / "bert_config.json"
    config.write_text(json.dumps({**BertConfig(**TINY).to_dict()}))
    write_vocab(tmp_path / "tf" / "vocab.txt")
    theirs = run_tf(tf_python, "write", tmp_path / "tf" / "bert_model.ckpt", config, tmp_path)
    report = tf_to_hf(tmp_path / "tf", tmp_path / "hf")
    assert report["tensors"] == 46 and report["skipped_training_state"] == 2 * 46 + 1
    assert_close(bertkit_outputs(tmp_path / "hf"), theirs)


@pytest.mark.tensorflow
def test_bertkit_written_checkpoint_is_read_by_tensorflow(tf_python, hf_pretraining_dir, tmp_path):
    src, _ = hf_pretraining_dir
    hf_to_tf(src, tmp_path / "tf")
    theirs = run_tf(
        tf_python, "read", tmp_path / "tf" / "bert_model.ckpt", tmp_path / "tf" / "bert_config.json", tmp_path
    )
    assert_close(bertkit_outputs(src), theirs)
