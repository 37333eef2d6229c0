"""``--precision=auto``: the choice logic, its cache and what a run records. Timing stays in the benchmark: here
the probe's measurements are fakes (rates per candidate), except one check that the real probe runs and returns
a rate for each candidate, with no claim about which is faster."""

import dataclasses
import json
import math
import os

import pytest
import tensorflow as tf

from training import numerics, provenance
from training.config import ConfigError, TrainConfig
from training.trainer import train

FAST_BFLOAT16 = {"float32": 100.0, "float32 + XLA": 80.0, "mixed_bfloat16": 150.0, "mixed_bfloat16 + XLA": 60.0}


@pytest.fixture
def fake_probe(monkeypatch, tmp_path):
    """Times nothing: each candidate's rate is FAST_BFLOAT16's; records the candidates probed. The cache lives
    under the test's folder and the CPU counts as having native bfloat16."""
    probed = []

    def measure(config, dataset, strategy, total_steps, candidate):
        probed.append(candidate.label)
        return FAST_BFLOAT16[candidate.label]

    monkeypatch.setattr(numerics, "time_train_step", measure)
    monkeypatch.setattr(numerics, "native_bfloat16", lambda: True)
    monkeypatch.setenv(numerics.CACHE_ENV, str(tmp_path / "cache"))
    return probed


def test_auto_trains_in_the_fastest_numerics_and_records_why(tmp_path, tiny_config, tiny_mnist, fake_probe):
    config = tiny_config(tmp_path / "run", arch="c4k3b-m2-d16", precision="auto")
    result = train(config, dataset=tiny_mnist)
    assert fake_probe == list(FAST_BFLOAT16)
    assert result.results["precision"] == "mixed_bfloat16"
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["config"]["precision"], saved["config"]["jit_compile"]) == ("mixed_bfloat16", False)
    record = saved["history"][-1]["numerics"]
    assert record["rates"] == FAST_BFLOAT16 and record["source"] == "measured"
    assert record["cpu"] == provenance.cpu_description()
    # Mixed precision computes in bfloat16 but keeps every variable, batch-norm statistics included, in float32.
    weights = result.model.named_weights()
    assert "conv1/bn/moving_variance" in weights
    assert {tf.as_dtype(v.dtype) for v in weights.values()} == {tf.float32}
    assert result.model(tf.zeros([1, 28, 28, 1])).dtype == tf.bfloat16


def test_a_resumed_run_keeps_its_first_choice_without_probing(tmp_path, tiny_config, tiny_mnist, fake_probe):
    train(tiny_config(tmp_path / "run", precision="auto", train_steps=10), dataset=tiny_mnist)
    fake_probe.clear()
    result = train(tiny_config(tmp_path / "run", precision="auto", train_steps=20), dataset=tiny_mnist)
    assert fake_probe == [] and result.results["precision"] == "mixed_bfloat16"
    history = json.loads((tmp_path / "run" / "config.json").read_text())["history"]
    assert history[-1]["numerics"]["source"] == "kept from the run's first start"


def test_a_forced_precision_is_kept_and_nothing_is_probed(tmp_path, tiny_config, tiny_mnist, fake_probe):
    result = train(tiny_config(tmp_path / "run", precision="float32"), dataset=tiny_mnist)
    assert fake_probe == [] and result.results["precision"] == "float32"
    assert "numerics" not in json.loads((tmp_path / "run" / "config.json").read_text())["history"][-1]


def test_the_cache_answers_the_same_machine_and_step_only(monkeypatch, tiny_config, tiny_mnist, fake_probe, tmp_path):
    config = tiny_config(tmp_path / "run", precision="auto")
    strategy = tf.distribute.get_strategy()
    assert numerics.choose(config, tiny_mnist, strategy, 20).source == "measured"
    assert numerics.choose(config, tiny_mnist, strategy, 20).source == "cached"
    assert len(fake_probe) == 4  # the second choice probed nothing
    for where, name, other in [(provenance, "cpu_description", lambda: "Another CPU, family 6 model 85, none"),
                               (tf, "__version__", "2.99.0"),
                               (numerics, "STEP_KERNELS", "code whose step ran other kernels")]:
        with monkeypatch.context() as patch:
            patch.setattr(where, name, other)
            assert numerics.choose(config, tiny_mnist, strategy, 20).source == "measured", name
    bigger_batch = dataclasses.replace(config, batch_size=128)
    assert numerics.choose(bigger_batch, tiny_mnist, strategy, 20).source == "measured"


def test_a_damaged_cache_is_probed_again_and_rewritten(tiny_config, tiny_mnist, fake_probe, tmp_path):
    cache = tmp_path / "cache" / numerics.CACHE_FILE
    cache.parent.mkdir()
    cache.write_text("[not a cache")
    config = tiny_config(tmp_path / "run", precision="auto")
    choice = numerics.choose(config, tiny_mnist, tf.distribute.get_strategy(), 20)
    assert (choice.source, choice.numerics) == ("measured", numerics.Numerics("mixed_bfloat16", False))
    assert len(json.loads(cache.read_text())) == 1


def _cached_entry(config, dataset):
    """(the cache file, this machine's key for ``config``'s step on ``dataset``) under the fake probe."""
    options = numerics.candidates(config, True)
    return (numerics.default_cache_dir() + "/" + numerics.CACHE_FILE,
            numerics.cache_key(config, dataset, tf.distribute.get_strategy(), options))


# Entries a hand or another program may leave under this machine's key. Before: a float64 or a "yes" stopped the
# run as if the user had asked for it, and a rate that is no number or an entry that is no object was a traceback.
FOREIGN_ENTRIES = {
    "unknown_precision": dict(precision="float64", jit_compile=False, rates=FAST_BFLOAT16),
    "not_a_candidate": dict(precision="mixed_float16", jit_compile=False, rates=FAST_BFLOAT16),
    "jit_not_a_bool": dict(precision="float32", jit_compile="yes", rates=FAST_BFLOAT16),
    "rate_not_a_number": dict(precision="float32", jit_compile=False, rates={**FAST_BFLOAT16, "float32": "fast"}),
    "rate_not_finite": dict(precision="float32", jit_compile=False, rates={**FAST_BFLOAT16, "float32": math.inf}),
    "not_the_fastest": dict(precision="float32", jit_compile=True, rates=FAST_BFLOAT16),
    "not_an_object": "mixed_bfloat16",
}


@pytest.mark.parametrize("entry", FOREIGN_ENTRIES.values(), ids=FOREIGN_ENTRIES)
def test_a_cache_entry_this_code_did_not_write_is_timed_again(tiny_config, tiny_mnist, fake_probe, tmp_path, entry):
    config = tiny_config(tmp_path / "run", precision="auto")
    path, key = _cached_entry(config, tiny_mnist)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / numerics.CACHE_FILE).write_text(json.dumps({key: entry}))
    choice = numerics.choose(config, tiny_mnist, tf.distribute.get_strategy(), 20)
    assert (choice.source, choice.numerics) == ("measured", numerics.Numerics("mixed_bfloat16", False))
    with open(path) as file:
        assert json.load(file)[key]["rates"] == FAST_BFLOAT16  # replaced by what was measured


@pytest.mark.parametrize("kind", ["named_pipe", "link_to_dev_zero", "directory"])
def test_a_cache_file_that_is_no_file_is_timed_again_without_blocking(tiny_config, tiny_mnist, fake_probe,
                                                                       tmp_path, kind):
    # Before: a named pipe blocked the run before its first line for as long as nobody wrote into it (killed
    # after 70 s by hand), and /dev/zero was read until the memory ran out.
    cache = tmp_path / "cache" / numerics.CACHE_FILE
    cache.parent.mkdir()
    {"named_pipe": lambda: os.mkfifo(cache), "link_to_dev_zero": lambda: cache.symlink_to("/dev/zero"),
     "directory": cache.mkdir}[kind]()
    choice = numerics.choose(tiny_config(tmp_path / "run", precision="auto"), tiny_mnist,
                             tf.distribute.get_strategy(), 20)
    assert choice.source == "measured"
    if kind == "named_pipe":  # replaced by the cache it should have been
        assert cache.is_file() and len(json.loads(cache.read_text())) == 1
    else:  # a link is never written through, nor a directory replaced: the next run times again
        assert os.path.islink(cache) or cache.is_dir()


def test_candidates_follow_the_machine_and_jit_compile():
    labels = lambda config, native: [c.label for c in numerics.candidates(config, native)]  # noqa: E731
    assert labels(TrainConfig(precision="auto"), False) == ["float32", "float32 + XLA"]
    assert labels(TrainConfig(precision="auto", jit_compile=True), True) == ["float32 + XLA", "mixed_bfloat16 + XLA"]


@pytest.mark.parametrize("settings", [dict(loop="fit"), dict(strategy="multi_worker")])
def test_auto_is_refused_where_the_probe_cannot_time_the_step(settings):
    with pytest.raises(ConfigError, match="--precision=auto times the custom loop's step on one machine"):
        TrainConfig(precision="auto", **settings)


def test_the_real_probe_times_each_candidate(tiny_config, tiny_mnist):
    config = tiny_config("unused", arch="d8", batch_size=16, steps_per_loop=2)
    for candidate in [numerics.Numerics("float32", False), numerics.Numerics("mixed_bfloat16", False)]:
        rate = numerics.time_train_step(config, tiny_mnist, tf.distribute.get_strategy(), 20, candidate)
        # A rate in images/s, whatever this machine's speed: positive, finite, and not the steps' count alone
        # (below 1e7: a 16-image step of a real network takes far more than 1.6 microseconds).
        assert 0 < rate < 1e7 and math.isfinite(rate), rate
