"""Every layer kind of ``models.architecture.KINDS`` is whole: it parses, counts and says what inspection shows of
it, both networks build it, ``COVERAGE_ARCHS`` uses each of its tokens and suffixes, and the docs list exactly the
registered tokens. Also: both implementations follow the ``Network`` protocol and can do what their
``CAPABILITIES`` say."""

import dataclasses
import pathlib
import re

import keras
import numpy as np
import pytest

from models import architecture as A
from models import network as network_lib
from models.keras_cnn import KERAS_LAYERS
from reference.network import REFERENCE_LAYERS

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
NUM_CLASSES = 3


def _coverage_tokens():
    return [text for arch, _ in A.COVERAGE_ARCHS for text in A.resolve(arch).split("-")]


def test_every_kind_declares_each_part():
    for spec, kind in A.KINDS.items():
        assert kind.spec is spec and dataclasses.is_dataclass(spec), spec
        assert spec.__dataclass_params__.frozen, spec
        assert callable(kind.count), spec
        assert kind.role in A.ROLES, spec
        # A convolution's feature maps are shown with its first kernel; no other kind has one to show.
        assert (kind.kernel is not None) == (kind.role == A.CONV), spec
        for token in kind.tokens:
            assert isinstance(token.pattern, re.Pattern) and callable(token.parse) and token.doc, token.grammar
    assert len({token.prefix for token in A.TOKENS}) == len(A.TOKENS)  # one name, one token


def test_both_networks_build_every_kind():
    assert set(KERAS_LAYERS) == set(A.KINDS)
    assert set(REFERENCE_LAYERS) == set(A.KINDS)


def test_coverage_archs_plan_every_kind():
    planned = {type(layer.spec) for arch, shape in A.COVERAGE_ARCHS for layer in A.plan(arch, shape, NUM_CLASSES)}
    assert planned == set(A.KINDS)


@pytest.mark.parametrize("token", A.TOKENS, ids=[token.prefix for token in A.TOKENS])
def test_coverage_archs_use_every_token_and_suffix(token):
    matches = [match for text in _coverage_tokens() if (match := token.pattern.fullmatch(text))]
    assert matches, f"no architecture of COVERAGE_ARCHS uses {token.grammar}"
    # Each optional part of a token is a named group: some covered token must have it.
    unused = [group for group in token.pattern.groupindex if all(match[group] is None for match in matches)]
    assert not unused, f"COVERAGE_ARCHS never uses the part(s) {unused} of {token.grammar}"


def test_the_kernel_inspection_draws_is_the_first_convolution_of_each_conv_layer():
    # The reference has the Keras CNN's variable names (tests/test_reference_api.py); it is the cheaper to build.
    for arch, shape in A.COVERAGE_ARCHS:
        network = network_lib.build_network("reference", arch, shape, NUM_CLASSES)
        named = network.named_weights()
        for layer in network.plan:
            kind = A.kind_of(layer.spec)
            if kind.role == A.CONV:
                kernel = named[f"{layer.spec.name}/{kind.kernel}"]
                assert kernel.shape[2] == layer.input_shape[-1], (arch, layer.spec.name)  # HWIO on the layer input


def test_grammar_and_the_docstring_list_every_token():
    assert A.GRAMMAR == ", ".join(token.grammar for token in A.TOKENS)
    for token in A.TOKENS:
        assert f"| ``{token.grammar}`` | {token.doc} |" in A.__doc__


def test_readme_token_table_lists_exactly_the_registered_tokens():
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## The architecture language", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    listed = [re.match(r"[^{\[]+", name)[0] for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])]
    assert sorted(listed) == sorted(token.prefix for token in A.TOKENS)


@pytest.mark.parametrize("impl", network_lib.IMPLEMENTATIONS)
def test_each_implementation_follows_the_protocol_and_its_capabilities(impl, tmp_path):
    network = network_lib.build_network(impl, "c2k3-d4", (5, 5, 1), NUM_CLASSES)
    assert isinstance(network, network_lib.Network)
    capabilities = network_lib.CAPABILITIES[impl]
    assert capabilities.runs_under_fit == isinstance(network, keras.Model)  # compile/fit are keras.Model's
    if capabilities.saves_keras_file:
        path = str(tmp_path / "network.keras")
        network.save(path)
        images = np.random.default_rng(0).uniform(size=(2, 5, 5, 1)).astype(np.float32)
        np.testing.assert_array_equal(keras.saving.load_model(path)(images), network(images))
    else:
        assert not hasattr(network, "save")
