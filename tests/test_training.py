"""Training: loss goes down, the regularisers do what they say, the cache and resume are exact."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from smoothviz.config import TrainConfig
from smoothviz.layers import select_layers
from smoothviz.regularizers import normalized_difference
from smoothviz.spectral import effective_rank, singular_values
from smoothviz.training import TrainingDiverged, cache_key, train

ROOT = Path(__file__).resolve().parent.parent
# Small enough for seconds per run on two CPU cores, real data all the same.
FAST = dict(model="mlp", width=64, epochs=3, train_subset=2000, batch_size=64, device="cpu")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache for the comparisons below, so the common baseline is trained once."""
    return tmp_path_factory.mktemp("shared-cache")


def _mean_over_layers(model, fn):
    layers = select_layers(model)
    return sum(fn(m.weight) for _, m in layers) / len(layers)


def test_training_reduces_the_loss_and_learns(cache_dir):
    run = train(TrainConfig(**FAST), progress=False)
    h = run.history
    assert list(h.epoch) == [1, 2, 3]
    assert h.train_loss.iloc[-1] < h.train_loss.iloc[0]
    assert h.test_acc.iloc[-1] > 0.6  # ten classes: chance is 0.1
    assert {"test_loss", "seconds", "lr"} <= set(h.columns)


def test_nuclear_norm_training_lowers_the_effective_rank(shared_cache):
    base = train(TrainConfig(**FAST), cache_dir=shared_cache, progress=False)
    nuc = train(TrainConfig(**FAST, nuclear=0.02), cache_dir=shared_cache, progress=False)
    er = lambda w: effective_rank(singular_values(w))  # noqa: E731
    er_base, er_nuc = _mean_over_layers(base.model, er), _mean_over_layers(nuc.model, er)
    assert er_nuc < 0.8 * er_base, (er_nuc, er_base)
    assert "reg_nuclear" in nuc.history.columns


def test_amortised_nuclear_norm_keeps_the_exact_effect(shared_cache):
    base = train(TrainConfig(**FAST), cache_dir=shared_cache, progress=False)
    amortised = train(
        TrainConfig(**FAST, nuclear=0.02, nuclear_every=10), cache_dir=shared_cache, progress=False
    )
    er = lambda w: effective_rank(singular_values(w))  # noqa: E731
    assert _mean_over_layers(amortised.model, er) < 0.8 * _mean_over_layers(base.model, er)


@pytest.mark.parametrize("term", ["first_order", "second_order"])
def test_smoothness_training_gives_smoother_weights(shared_cache, term):
    base = train(TrainConfig(**FAST), cache_dir=shared_cache, progress=False)
    smooth = train(TrainConfig(**FAST, **{term: 0.05}), cache_dir=shared_cache, progress=False)
    rough = lambda w: normalized_difference(w, 1, 0)  # noqa: E731
    assert _mean_over_layers(smooth.model, rough) < 0.7 * _mean_over_layers(base.model, rough)
    assert f"reg_{term}" in smooth.history.columns


def test_proximal_training_lowers_the_effective_rank(shared_cache):
    base = train(TrainConfig(**FAST), cache_dir=shared_cache, progress=False)
    prox = train(
        TrainConfig(**FAST, proximal=0.5, proximal_every=2), cache_dir=shared_cache, progress=False
    )
    er = lambda w: effective_rank(singular_values(w))  # noqa: E731
    assert _mean_over_layers(prox.model, er) < 0.8 * _mean_over_layers(base.model, er)


def test_same_config_and_seed_give_the_same_weights_and_the_cache_returns_them(cache_dir):
    cfg = TrainConfig(**{**FAST, "epochs": 1})
    a = train(cfg, use_cache=False, progress=False)
    b = train(cfg, progress=False)
    assert not b.from_cache and b.checkpoint is not None and b.checkpoint.is_file()
    t0 = time.perf_counter()
    c = train(cfg, progress=False)
    assert c.from_cache and time.perf_counter() - t0 < 5
    for sa, sb, sc in zip(
        a.model.state_dict().values(), b.model.state_dict().values(), c.model.state_dict().values()
    ):
        assert torch.equal(sa, sb) and torch.equal(sb, sc)
    assert c.history.equals(b.history)
    sidecar = json.loads(b.checkpoint.with_suffix(".json").read_text())
    assert (
        sidecar["config"] == cfg.to_dict() and sidecar["environment"]["torch"] == torch.__version__
    )
    # A different seed is a different cache entry.
    assert cache_key(cfg) != cache_key(cfg.replace(seed=1))


@pytest.mark.slow
def test_resume_after_a_real_kill_ends_with_the_same_weights(cache_dir, monkeypatch):
    cfg = TrainConfig(**{**FAST, "epochs": 6})
    script = (
        "import json,sys,torch; from smoothviz.config import TrainConfig; from smoothviz.training import train; "
        f"torch.set_num_threads({torch.get_num_threads()}); "  # same float summation order as here
        "train(TrainConfig(**json.loads(sys.argv[1])), progress=False)"
    )
    # Both processes keep the count set here (smoothviz.threads would otherwise share the cores
    # out anew in each, and another count sums the floats in another order).
    monkeypatch.setenv("SMOOTHVIZ_THREADS", "off")
    env = dict(os.environ, SMOOTHVIZ_CACHE=str(cache_dir))
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(cfg.to_dict())], env=env)
    partial = cache_dir / "checkpoints" / f"{cache_key(cfg)}.partial.pt"
    deadline = time.time() + 120
    while not partial.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert partial.exists(), "the run should have left a partial checkpoint after its first epoch"
    assert not (cache_dir / "checkpoints" / f"{cache_key(cfg)}.json").exists(), "killed too late"
    first_epoch = torch.load(partial, weights_only=True)["history"]
    resumed = train(cfg, progress=False)
    assert not resumed.from_cache and len(resumed.history) == 6
    # The finished epochs were kept, not redone.
    assert resumed.history.seconds.iloc[0] == pytest.approx(first_epoch[0]["seconds"])
    fresh = train(cfg, use_cache=False, progress=False)
    for a, b in zip(resumed.model.state_dict().values(), fresh.model.state_dict().values()):
        assert torch.equal(a, b)
    assert not partial.exists()


def test_divergence_stops_with_a_message_and_no_finished_checkpoint(cache_dir):
    cfg = TrainConfig(**{**FAST, "epochs": 1, "lr": 1e6})
    with pytest.raises(TrainingDiverged, match=r"epoch 1.*lr=1000000"):
        train(cfg, progress=False)
    assert not list((cache_dir / "checkpoints").glob("*.json"))


def test_a_corrupted_checkpoint_is_detected_and_retrained(cache_dir):
    cfg = TrainConfig(**{**FAST, "epochs": 1})
    first = train(cfg, progress=False)
    first.checkpoint.write_bytes(first.checkpoint.read_bytes()[:100])  # truncate
    with pytest.warns(UserWarning, match="corrupted"):
        again = train(cfg, progress=False)
    assert not again.from_cache
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_a_checkpoint_carrying_a_pickle_payload_is_refused_and_nothing_runs(cache_dir, tmp_path):
    cfg = TrainConfig(**{**FAST, "epochs": 1})
    run = train(cfg, progress=False)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"x": Payload()}, run.checkpoint)
    sidecar = run.checkpoint.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    from smoothviz.data import sha256_of

    meta["weights_sha256"] = sha256_of(run.checkpoint)  # an attacker can fix the checksum too
    sidecar.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="could not be loaded safely"):
        again = train(cfg, progress=False)
    assert not marker.exists()
    assert not again.from_cache


def test_training_on_a_users_own_tensors(cache_dir):
    from smoothviz.data import from_tensors

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (512,), generator=g)
    x = torch.randn(512, 3, 8, 8, generator=g) + (2.0 * y - 1)[:, None, None, None]  # separable
    data = from_tensors(x, y, x[:64], y[:64])
    run = train(
        TrainConfig(model="mlp", width=32, epochs=4, batch_size=32, device="cpu"),
        data=data,
        progress=False,
    )
    assert run.history.test_acc.iloc[-1] > 0.75  # a linearly separable task


@pytest.mark.parametrize("images,epochs", [(1024, 1), (512, 1), (256, 2)])
def test_short_runs_train_or_say_why_not(cache_dir, images, epochs):
    from smoothviz.config import ConfigError

    cfg = TrainConfig(model="mlp", width=8, epochs=epochs, train_subset=images, batch_size=128)
    steps = epochs * (images // 128)
    if steps >= 4:
        assert len(train(cfg, use_cache=False, progress=False).history) == epochs
    else:
        with pytest.raises(ConfigError, match=r"at least 4 are needed"):
            train(cfg, use_cache=False, progress=False)


def test_an_unreadable_partial_checkpoint_restarts_exactly_like_a_fresh_run(cache_dir):
    cfg = TrainConfig(**{**FAST, "epochs": 2})
    partial = cache_dir / "checkpoints" / f"{cache_key(cfg)}.partial.pt"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="ignoring unreadable partial checkpoint"):
        restarted = train(cfg, progress=False)
    fresh = train(cfg, use_cache=False, progress=False)
    for a, b in zip(restarted.model.state_dict().values(), fresh.model.state_dict().values()):
        assert torch.equal(a, b)
